"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from nemo_qwenlong.config import RunConfig, load_config


def at_least(minimum: float, kind: Callable[[str], float] = int) -> Callable[[str], float]:
    """An argparse `type=` that parses with `kind` and refuses values below `minimum` (exit 2, at parse time)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not value >= minimum:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def above(bound: float) -> Callable[[str], float]:
    """An argparse `type=` for a float strictly above `bound`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > bound or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number > {bound}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)


def file_stem(text: str) -> str:
    """An argparse `type=` for a bare file name stem (no folders, no `..`): outputs stay inside --out."""
    if not text or text in (".", "..") or any(c in text for c in "/\\\0") or text.startswith("."):
        raise argparse.ArgumentTypeError(f"expected a plain file name stem such as 'train' (no folders), got {text!r}")
    return text


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="YAML", help="recipe file (inherits through its `defaults:` key)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="dotted overrides applied last, e.g. rl.clip_high=0.28 curriculum.stages.1.steps=40",
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, args.overrides)

