"""HotpotQA: score responses. Same as `nemo-qwenlong eval score --benchmarks hotpotqa` (docs/eval.md).

Usage: python eval/hotpotqa_verify.py --responses OUT/responses.jsonl --output OUT [--judge-url URL --judge-model NAME]
"""

import sys

from nemo_qwenlong.cli.eval_cmd import script_main

if __name__ == "__main__":
    sys.exit(script_main("hotpotqa", "verify"))
