"""The seven-benchmark DocQA evaluation: the released QwenLong-L1 protocol, stricter metrics beside it (docs/eval.md)."""
