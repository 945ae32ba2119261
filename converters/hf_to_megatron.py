"""HF Qwen2 folder -> Megatron torch_dist checkpoint. Same as `nemo-qwenlong convert hf-to-megatron`.

Usage: python converters/hf_to_megatron.py --hf DIR --out DIR [--tp N --pp M --dtype bfloat16]
"""

import sys

from nemo_qwenlong.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["convert", "hf-to-megatron", *sys.argv[1:]]))
