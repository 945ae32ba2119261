"""2WikiMultihopQA: generate responses. Same as `nemo-qwenlong eval generate --benchmarks 2wikimqa` (docs/eval.md).

Usage: python eval/2wikimqa.py --model HF_DIR --data-dir DIR --output OUT [--server-url URL ...]; then eval/2wikimqa_verify.py.
"""

import sys

from nemo_qwenlong.cli.eval_cmd import script_main

if __name__ == "__main__":
    sys.exit(script_main("2wikimqa", "generate"))
