"""DocMath: generate responses. Same as `nemo-qwenlong eval generate --benchmarks docmath` (docs/eval.md).

Usage: python eval/docmath.py --model HF_DIR --data-dir DIR --output OUT [--server-url URL ...]; then eval/docmath_verify.py.
"""

import sys

from nemo_qwenlong.cli.eval_cmd import script_main

if __name__ == "__main__":
    sys.exit(script_main("docmath", "generate"))
