"""`nemo-qwenlong`: entry point. Each subcommand module registers its own parser."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nemo_qwenlong import __version__
from nemo_qwenlong.cli import config_cmd, convert_cmd, data_cmd, eval_cmd, launch_cmd, plan_cmd, run_cmd
from nemo_qwenlong.cli.errors import run_command

SUBCOMMANDS = (run_cmd, eval_cmd, config_cmd, convert_cmd, data_cmd, plan_cmd, launch_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemo-qwenlong",
        description="QwenLong-L1 long-context reasoning RL on megatron-core and vLLM.",
        epilog="Run `nemo-qwenlong <command> --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # KEY=VALUE overrides may come after options (`run RECIPE --output DIR a.b=1`)
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return run_command(args)  # the error/signal convention of every subcommand (cli/errors.py)


if __name__ == "__main__":
    sys.exit(main())
