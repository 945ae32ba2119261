"""Thin entry point: `python launcher/launch.py KIND --recipe R --cluster C [--dry-run]` = `nemo-qwenlong launch ...`.

Everything lives in the library (nemo_qwenlong/launch/, cli/launch_cmd.py); see docs/launch.md.
"""

import sys

from nemo_qwenlong.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["launch", *sys.argv[1:]]))
