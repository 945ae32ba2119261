"""The `nemo-qwenlong` command line: thin argument parsing over library functions."""
