"""`nemo-qwenlong launch KIND RECIPE [--cluster conf/cluster/<site>.yaml] [--dry-run]`: Slurm jobs via nemo-run."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nemo_qwenlong.cli.common import add_recipe_args, recipe_args
from nemo_qwenlong.cli.errors import CommandError

CLUSTER_FILE_KEYS = ("cluster", "runs_dir")  # site-specific only; everything else belongs in the recipe

KIND_HELP = {
    "sft": "warm-up SFT only (pipeline data, sft): multi-node torchrun, requeued on preemption",
    "rl": "the recipe's RL stages (pipeline data, rl, export) with the judge (its own vllm serve node, or the "
          "first node's first GPUs: cluster.judge.placement)",
    "run": "the recipe's whole pipeline, as `nemo-qwenlong run` runs it, with the judge (cluster.judge.placement)",
    "eval": "the seven-benchmark DocQA evaluation of --model: its vllm server and the eval client, + the judge",
    "judge": "the judge alone (vllm serve of cluster.judge.model_path); its address lands in <job folder>/judge_url",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("launch", help="render (--dry-run) or submit a Slurm job through nemo-run: sft, rl, run, eval, judge",
                       description="Render a nemo-run plan for a recipe and a cluster file: the sbatch script and one "
                       "script per task. --dry-run writes them and prints where; without it, submit with sbatch (on a "
                       "Slurm login node) or run the local executor (cluster.executor: local). See docs/launch.md.")
    kinds = p.add_subparsers(dest="kind", metavar="{sft,rl,run,eval,judge}", required=True)
    for kind, text in KIND_HELP.items():
        k = kinds.add_parser(kind, help=text, description=text)
        _args(k, kind)
        k.set_defaults(handler=_launch, anticipated=_anticipated())


def _args(p: argparse.ArgumentParser, kind: str) -> None:
    add_recipe_args(p)
    p.add_argument("--cluster", metavar="YAML", help="cluster file with the site's fields (conf/cluster/example-slurm.yaml); "
                   "merged over the recipe's cluster section")
    p.add_argument("--dry-run", action="store_true", help="write the sbatch and task scripts, print where; submit nothing")
    p.add_argument("--run-name", metavar="NAME", help="run (and nemo-run experiment) name; the run dir is <runs_dir>/NAME; "
                   "default <recipe name>-<kind>-<UTC timestamp>. The same name continues that run (move its old plan folder "
                   "away first)")
    p.add_argument("--plan-dir", default="launch-plans", metavar="DIR",
                   help="where nemo-run writes the plan locally (default ./launch-plans)")
    if kind == "eval":
        p.add_argument("--model", required=True, metavar="HF_DIR",
                       help="HF folder to evaluate, as the container sees it (e.g. <run dir>/03-export/hf)")


def _anticipated() -> tuple[type[Exception], ...]:
    from nemo_qwenlong.launch.plan import LaunchError

    return (LaunchError,)


def _run_name(text: str | None, default: str) -> str:
    import re

    name = text or default
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in (".", ".."):
        raise CommandError(f"--run-name {name!r}: letters, digits, '.', '_', '-' only (it names folders on the cluster)")
    return name


def _check_cluster_file(path: str) -> None:
    from nemo_qwenlong.config.loader import load_tree

    extra = sorted(set(load_tree(Path(path))) - set(CLUSTER_FILE_KEYS))
    if extra:
        raise CommandError(f"--cluster {path}: top-level key(s) {', '.join(extra)} are not site fields; accepted in a "
                           f"cluster file: {', '.join(CLUSTER_FILE_KEYS)} (the rest belongs in the recipe or an override)")


def _launch(args: argparse.Namespace) -> int:
    from nemo_qwenlong.config import load_config
    from nemo_qwenlong.launch.plan import LaunchOptions, build_plan, check_no_secrets
    from nemo_qwenlong.launch.slurm import render

    recipe, overrides = recipe_args(args)
    check_no_secrets(overrides, "override")
    if args.cluster:
        _check_cluster_file(args.cluster)
    cfg = load_config(recipe, overrides, overlays=[args.cluster] if args.cluster else [])
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    opts = LaunchOptions(_run_name(args.run_name, f"{cfg.name}-{args.kind}-{stamp}"), getattr(args, "model", None),
                         recipe=args.recipe)
    plan = build_plan(args.kind, cfg, opts)
    out = render(cfg.cluster, plan, Path(args.plan_dir), submit=not args.dry_run)
    _report(args, cfg, plan, out)
    return 0


def _report(args: argparse.Namespace, cfg, plan, out) -> None:  # noqa: ANN001 - RunConfig, LaunchPlan, Rendered
    shape = ", ".join(f"{t.name} {t.nodes}x{t.gpus_per_node} GPU (group {t.group})" for t in plan.tasks)
    what = "dry run" if args.dry_run else ("submitted" if cfg.cluster.executor == "slurm" else "ran")
    print(f"launch {plan.kind}: {what}: {cfg.name} on {cfg.cluster.executor} ({shape})")
    if plan.run_dir:
        print(f"  run dir:  {plan.run_dir}" + (" (inside the container)" if cfg.cluster.executor == "slurm" else ""))
    if out.sbatch:
        print(f"  sbatch:   {out.sbatch}")
    for task, script in zip(plan.tasks, out.scripts):
        print(f"  script:   {script}  ({task.name})")
    if out.cluster_folder:
        print(f"  on the cluster: {out.cluster_folder} (logs; /nemo_run in the containers)")
    if plan.secret_env:
        print(f"  passed by name from the submitting shell: {', '.join(plan.secret_env)}")
    if args.dry_run and cfg.cluster.executor == "slurm":
        print("  submit: the same command without --dry-run, on a Slurm login node")
