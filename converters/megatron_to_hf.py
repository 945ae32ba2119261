"""Megatron checkpoint -> HF folder for vLLM/transformers. Same as `nemo-qwenlong convert megatron-to-hf`.

Usage: python converters/megatron_to_hf.py --megatron DIR --out DIR [--yarn-factor 4 --yarn-original-max 32768]
"""

import sys

from nemo_qwenlong.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["convert", "megatron-to-hf", *sys.argv[1:]]))
