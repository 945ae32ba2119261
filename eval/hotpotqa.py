"""HotpotQA: generate responses. Same as `nemo-qwenlong eval generate --benchmarks hotpotqa` (docs/eval.md).

Usage: python eval/hotpotqa.py --model HF_DIR --data-dir DIR --output OUT [--server-url URL ...]; then eval/hotpotqa_verify.py.
"""

import sys

from nemo_qwenlong.cli.eval_cmd import script_main

if __name__ == "__main__":
    sys.exit(script_main("hotpotqa", "generate"))
