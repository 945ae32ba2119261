"""`nemo-qwenlong demo`: the toy RL run of the algorithm core (what `make run` runs today)."""

from __future__ import annotations

import argparse
import logging
import sys

from nemo_qwenlong.cli.common import add_config_args, config_from_args, quiet_backends
from nemo_qwenlong.rundir import create_run_dir


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="toy RL run of the algorithm core on CPU (GRPO/DAPO, dynamic sampling, curriculum)",
        description="A real RL run of the algorithm core on a toy document-QA task with a tiny GRU policy. "
        "It is not the LLM pipeline: `nemo-qwenlong smoke` runs the LLM stack (Megatron policy, vLLM rollouts, refit).",
    )
    add_config_args(parser, default="conf/toy-demo.yaml")
    parser.add_argument("--run-dir", help="write here instead of <runs_dir>/<name>-<timestamp>")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_demo)

    smoke = sub.add_parser(
        "smoke",
        help="the LLM stack for a few RL steps on a tiny random Qwen2 (converter, Megatron policy, vLLM, refit)",
        description="Every LLM-side component, real, on CPU: a tiny Qwen2 is converted to Megatron, trained for a "
        "few DAPO steps on vLLM rollouts with engine refit and agreement checks, then checkpointed and exported to "
        "HF. Not the QwenLong-L1 training loop (no curriculum, judge or resume); the reward is a toy.",
    )
    add_config_args(smoke, default="conf/toy-demo.yaml")
    smoke.add_argument("--steps", type=int, default=4, help="RL steps; default 4")
    smoke.add_argument("--run-dir", help="write here instead of <runs_dir>/<name>-smoke-<timestamp>")
    smoke.set_defaults(handler=_smoke)


def _demo(args: argparse.Namespace) -> int:
    from nemo_qwenlong.algorithms import DynamicSamplingExhausted
    from nemo_qwenlong.demo.loop import check_demo_config, run_demo

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    check_demo_config(cfg)
    logging.getLogger(__name__).setLevel(cfg.logging.level)
    run_dir = create_run_dir(cfg, args.run_dir)
    print(f"run dir: {run_dir} (resolved config: {run_dir / 'config.yaml'})")
    try:
        result = run_demo(cfg, run_dir, progress=cfg.logging.progress_bars and not args.no_progress)
    except DynamicSamplingExhausted as err:
        print(f"run stopped: {err}\nmetrics so far: {run_dir / 'metrics.jsonl'}", file=sys.stderr)
        return 1
    print(f"{result.steps} RL steps: accuracy {result.first_accuracy:.2f} (first steps) -> {result.last_accuracy:.2f} (last steps)")
    print(f"metrics: {result.metrics_path}")
    if result.plot_path:
        print(f"plot:    {result.plot_path}")
    return 0


def _smoke(args: argparse.Namespace) -> int:
    from nemo_qwenlong.demo.llm_stack import run_smoke

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_backends()
    if args.steps < 1:
        print(f"--steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
    cfg = config_from_args(args)
    cfg = cfg.model_copy(update={"name": f"{cfg.name}-smoke"})
    run_dir = create_run_dir(cfg, args.run_dir)
    print(f"run dir: {run_dir}")
    records = run_smoke(cfg, run_dir, args.steps)
    print(f"reward {records[0]['reward_mean']:.3f} (step 1) -> {records[-1]['reward_mean']:.3f} (step {len(records)})")
    return 0
