"""`nemo-qwenlong demo`: the toy RL run of the algorithm core (what `make run` runs today)."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys

from pathlib import Path

from nemo_qwenlong.cli.common import add_config_args, config_from_args, packaged_recipe, positive_int, quiet_backends
from nemo_qwenlong.cli.errors import CommandError
from nemo_qwenlong.config import RunConfig
from nemo_qwenlong.rundir import create_run_dir

DEFAULT_RECIPE = packaged_recipe("toy-demo.yaml")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="toy RL run of the algorithm core on CPU (GRPO/DAPO, dynamic sampling, curriculum)",
        description="A real RL run of the algorithm core on a toy document-QA task with a tiny GRU policy. "
        "It is not the LLM pipeline: `nemo-qwenlong smoke` runs the LLM stack (Megatron policy, vLLM rollouts, refit).",
    )
    add_config_args(parser, default=DEFAULT_RECIPE)
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
    add_config_args(smoke, default=DEFAULT_RECIPE)
    smoke.add_argument("--steps", type=positive_int, default=4, help="RL steps (>= 1); default 4")
    smoke.add_argument("--run-dir", help="write here instead of <runs_dir>/<name>-smoke-<timestamp>")
    smoke.set_defaults(handler=_smoke)


def _demo(args: argparse.Namespace) -> int:
    from nemo_qwenlong.algorithms import DynamicSamplingExhausted
    from nemo_qwenlong.demo.loop import check_demo_config, run_demo

    from nemo_qwenlong.loops.preemption import Preempted, PreemptionFlag

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    check_demo_config(cfg)
    refuse_unsupported(cfg)
    logging.getLogger(__name__).setLevel(cfg.logging.level)
    if args.run_dir is not None:
        refuse_other_config(cfg, Path(args.run_dir))
    run_dir = create_run_dir(cfg, args.run_dir)
    print(f"run dir: {run_dir} (resolved config: {run_dir / 'config.yaml'})")
    flag = PreemptionFlag().install()  # SIGTERM/SIGUSR1: save the state at the next step, exit 0
    try:
        result = run_demo(cfg, run_dir, progress=cfg.logging.progress_bars and not args.no_progress,
                          stop=lambda: flag.signal is not None)
    except DynamicSamplingExhausted as err:
        print(f"run stopped: {err}\nmetrics so far: {run_dir / 'metrics.jsonl'}", file=sys.stderr)
        return 1
    except Preempted as stop:
        print(f"demo: preempted; state saved after {stop}. Re-run with --run-dir {run_dir} to continue.", flush=True)
        return 0
    finally:
        flag.uninstall()
    print(f"{result.steps} RL steps: accuracy {result.first_accuracy:.2f} (first steps) -> {result.last_accuracy:.2f} (last steps)")
    print(f"metrics: {result.metrics_path}")
    if result.plot_path:
        print(f"plot:    {result.plot_path}")
    return 0


def _smoke(args: argparse.Namespace) -> int:
    from nemo_qwenlong.demo.llm_stack import run_smoke

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_backends()
    cfg = config_from_args(args)
    refuse_unsupported(cfg)
    cfg = cfg.model_copy(update={"name": f"{cfg.name}-smoke"})
    fresh = args.run_dir is None or not Path(args.run_dir).exists()
    run_dir = create_run_dir(cfg, args.run_dir)
    print(f"run dir: {run_dir}")
    try:
        records = run_smoke(cfg, run_dir, args.steps)
    except BaseException:  # SIGTERM (cli.errors.Terminated), Ctrl-C or a failure: a smoke run is all or nothing
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
            print(f"smoke: stopped; removed the partial run dir {run_dir}", file=sys.stderr)
        raise
    print(f"reward {records[0]['reward_mean']:.3f} (step 1) -> {records[-1]['reward_mean']:.3f} (step {len(records)})")
    return 0


def refuse_unsupported(cfg: RunConfig) -> None:
    """`run`'s hardware check (loops.pipeline.check_hardware), for this one-process command."""
    from nemo_qwenlong.loops.pipeline import RunError, check_hardware

    try:
        check_hardware(cfg, world=1)
    except RunError as err:
        raise CommandError(str(err)) from None


def refuse_other_config(cfg: RunConfig, run_dir: Path) -> None:
    """A run dir that holds a demo state continues only under the config it was started with."""
    import yaml

    from nemo_qwenlong.config import to_yaml
    from nemo_qwenlong.demo.loop import DEMO_STATE
    from nemo_qwenlong.loops.pipeline import config_differences

    saved = run_dir / "config.yaml"
    if cfg.checkpoint.resume != "auto" or not (run_dir / DEMO_STATE).is_file() or not saved.is_file():
        return
    diffs = config_differences(yaml.safe_load(saved.read_text()), yaml.safe_load(to_yaml(cfg)))
    if diffs:
        raise CommandError(f"{run_dir} holds a demo run started with another config; continuing it would not "
                           "reproduce the run. Differences:\n  " + "\n  ".join(diffs))
