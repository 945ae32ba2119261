"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse

from nemo_qwenlong.config import RunConfig, load_config


def add_config_args(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--config", "-c", default=default, metavar="YAML",
        help="recipe file (inherits through its `defaults:` key)" + (f"; default {default}" if default else ""),
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="dotted overrides applied last, e.g. rl.clip_high=0.28 curriculum.stages.1.steps=40",
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, args.overrides)


def quiet_backends() -> None:
    """Silence the start-up chatter of megatron-core, torch DCP and vLLM (absent TE/Apex, deprecations,
    per-module INFO lines) so a command's own progress lines stay readable. Errors still show."""
    import logging
    import os
    import warnings

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    for category in (UserWarning, FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(megatron|torch\.distributed|vllm)")
    logging.getLogger("megatron").setLevel(logging.ERROR)
