"""`nemo-qwenlong run RECIPE`: the main job (loops.pipeline): data, SFT, RL stages, export, eval."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from nemo_qwenlong.cli.common import add_recipe_args, recipe_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="the main job: data, warm-up SFT, curriculum RL stages, HF export, held-out eval",
        description="Run the stages the recipe's `pipeline` names, each in its own folder under the run directory. "
        "An interrupted run continues from its last complete checkpoint (--resume auto); SIGTERM/SIGUSR1 write a "
        "checkpoint at the next step and exit 0. See docs/run.md.",
    )
    p.add_argument("--output", "-o", metavar="DIR", help="run directory (default <runs_dir>/<name>-<timestamp>)")
    p.add_argument("--resume", choices=("auto", "never"), default="auto",
                   help="auto (default): continue the run in --output, skipping finished stages; never: refuse "
                   "an existing run directory")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N RL steps in total (smoke runs, tests)")
    p.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                   help="start N local ranks (torchrun) for TP/DP; default 1")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (one line per step)")
    add_recipe_args(p)
    p.set_defaults(handler=_run)


def _fail(message: str) -> int:
    print(f"run error: {message}", file=sys.stderr)
    return 2


def _torchrun(args: argparse.Namespace) -> int:
    argv = [a for a in sys.argv[1:]]
    i = argv.index("--nproc-per-node") if "--nproc-per-node" in argv else None
    if i is not None:
        del argv[i:i + 2]
    argv = [a for a in argv if not a.startswith("--nproc-per-node=")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc_per_node}",
           "-m", "nemo_qwenlong.cli.main", *argv]
    return subprocess.call(cmd, env=os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})


def _run(args: argparse.Namespace) -> int:
    from nemo_qwenlong.config import check_runnable, load_config

    if args.max_steps is not None and args.max_steps < 1:
        return _fail(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.nproc_per_node < 1:
        return _fail(f"--nproc-per-node must be >= 1, got {args.nproc_per_node}")
    recipe, overrides = recipe_args(args)
    cfg = check_runnable(load_config(recipe, overrides), recipe)  # as config validate, plan, launch
    if args.nproc_per_node > 1 and "RANK" not in os.environ:
        from nemo_qwenlong.loops.checks import RunError, check_supported

        try:  # once here, for the ranks torchrun is about to start (each checks again, as under any launcher)
            check_supported(cfg, args.nproc_per_node, os.environ | {"LOCAL_WORLD_SIZE": str(args.nproc_per_node)})
        except RunError as err:
            return _fail(str(err))
        return _torchrun(args)
    logging.basicConfig(level=cfg.logging.level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from nemo_qwenlong.algorithms import DynamicSamplingExhausted
    from nemo_qwenlong.loops.pipeline import Run, RunError, RunOptions
    from nemo_qwenlong.loops.preemption import Preempted
    from nemo_qwenlong.rewards.hybrid import JudgeUnavailableError
    from nemo_qwenlong.rollout.refit import EngineTrainerMismatch

    opts = RunOptions(Path(args.output) if args.output else None, args.resume, args.max_steps, not args.no_progress)
    run = Run(cfg, opts)
    try:
        run.run()
    except Preempted as stop:
        print(f"run: preempted; checkpoint written after {stop}. Resume with the same command.", flush=True)
        from nemo_qwenlong.launch.requeue import mark_preempted

        mark_preempted()  # a launched Slurm job requeues itself on this mark (docs/launch.md)
        return 0
    except (RunError, DynamicSamplingExhausted, JudgeUnavailableError, EngineTrainerMismatch, FileNotFoundError) as err:
        return _fail(str(err))
    return 0
