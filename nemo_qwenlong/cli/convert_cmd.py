"""`nemo-qwenlong convert ...`: HF ⇄ Megatron checkpoints for Qwen2 (docs/checkpoints.md)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from nemo_qwenlong.cli.common import above, non_negative_int, positive_int
from nemo_qwenlong.logs import quiet_backends

DTYPES = ("float32", "bfloat16", "float16")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("convert", help="convert checkpoints between Hugging Face and Megatron (torch_dist)")
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)

    imp = verbs.add_parser("hf-to-megatron", help="HF Qwen2 folder -> Megatron checkpoint (iter_0000000/, torch_dist)",
                           description="Streams layer by layer: memory stays near one layer, not the model.")
    imp.add_argument("--hf", required=True, type=Path, help="HF model folder (config.json + safetensors)")
    imp.add_argument("--out", required=True, type=Path, help="new checkpoint folder (must not exist or be empty)")
    imp.add_argument("--tp", type=positive_int, default=1,
                     help="tensor-parallel chunking of the shards (>= 1; any TP loads it); default 1")
    imp.add_argument("--pp", type=positive_int, default=1, help="pipeline-parallel size recorded for Megatron-Bridge (>= 1); default 1")
    imp.add_argument("--dtype", choices=DTYPES, help="cast weights; default: keep the checkpoint's dtype")
    imp.add_argument("--keep-rope-scaling", action="store_true",
                     help="keep a rope_scaling (e.g. YaRN) found in config.json; by default it is dropped for training")
    imp.set_defaults(handler=_hf_to_megatron)

    exp = verbs.add_parser("megatron-to-hf", help="Megatron checkpoint -> HF folder that vLLM and transformers load",
                           description="Writes sharded safetensors, an index, config.json with both transformers "
                                       "rope layouts, the tokenizer and generation_config.json.")
    exp.add_argument("--megatron", required=True, type=Path, help="checkpoint root (latest step) or an iter_NNNNNNN folder")
    exp.add_argument("--out", required=True, type=Path, help="new HF folder (must not exist or be empty)")
    exp.add_argument("--step", type=non_negative_int, help="step under the root; default: the latest complete one")
    exp.add_argument("--yarn-factor", type=above(1.0), help="add YaRN for serving (> 1; 4 = 128K from 32K); default: none")
    exp.add_argument("--yarn-original-max", type=positive_int, default=32768,
                     help="context the base model was trained at; default 32768")
    exp.add_argument("--dtype", choices=DTYPES,
                     help="cast the exported weights; default: keep the checkpoint's dtype (the output line says which)")
    exp.add_argument("--max-shard-gb", type=above(0.0), default=4.0, help="safetensors shard size (> 0); default 4 GB")
    exp.set_defaults(handler=_megatron_to_hf)


def _run(fn, *args, **kwargs) -> int:  # noqa: ANN001
    """Run a converter. Its CheckpointFormatErrors become `convert ... error: ...` (exit 2) and SIGTERM/SIGINT
    roll the staged output back (convert.staged_output) and exit 143/130, both through cli.errors."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_backends()
    print(fn(*args, **kwargs).line())
    return 0


def _hf_to_megatron(args: argparse.Namespace) -> int:
    from nemo_qwenlong.backends.megatron.convert import hf_to_megatron_checkpoint

    return _run(hf_to_megatron_checkpoint, args.hf, args.out, tp=args.tp, pp=args.pp, dtype=args.dtype,
                keep_rope_scaling=args.keep_rope_scaling)


def _megatron_to_hf(args: argparse.Namespace) -> int:
    from nemo_qwenlong.backends.megatron.convert import megatron_to_hf_checkpoint

    return _run(megatron_to_hf_checkpoint, args.megatron, args.out, step=args.step, yarn_factor=args.yarn_factor,
                yarn_original_max=args.yarn_original_max, dtype=args.dtype,
                max_shard_bytes=int(args.max_shard_gb * 2**30))
