"""Render every recipe × kind with the sample cluster file into one text per plan (the snapshot).

Update the stored snapshots after an intended change (then review `git diff tests/launch/snapshots`):

    NQL_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/launch/test_snapshots.py
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from nemo_qwenlong.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
CLUSTER_FILE = CONF / "cluster" / "example-slurm.yaml"
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
CLUSTER_RECIPES = sorted(p for p in (CONF / "qwenlong-l1").glob("*.yaml") if not p.name.startswith("base-"))
LOCAL_RECIPE = CONF / "tiny-cpu.yaml"
KINDS = ("sft", "rl", "run", "eval", "judge")
LOCAL_KINDS = ("sft", "rl", "run")
SFT_DATA = "sft.train_path=/data/sft/warmup.jsonl"  # the warm-up set is not released: every recipe leaves it null


def cases() -> list[tuple[Path, str]]:
    return [(r, k) for r in CLUSTER_RECIPES for k in KINDS] + [(LOCAL_RECIPE, k) for k in LOCAL_KINDS]


def launch_argv(recipe: Path, kind: str, plan_dir: Path) -> list[str]:
    argv = ["launch", kind, "--recipe", str(recipe), "--dry-run", "--plan-dir", str(plan_dir), "--run-name", f"{recipe.stem}-{kind}"]
    if recipe == LOCAL_RECIPE:
        return argv + ["runs_dir=/runs-local"]  # absolute: the local run dir would otherwise depend on the cwd
    argv += ["--cluster", str(CLUSTER_FILE)]
    if kind == "eval":
        argv += ["--model", f"/runs/{recipe.stem}-run/03-export/hf"]
    return argv + ([SFT_DATA] if kind == "sft" else [])


@contextlib.contextmanager
def no_stdin() -> Iterator[None]:
    """nemo-run's packaging runs `mkdir` through invoke, which reads stdin: pytest's captured stdin refuses that."""
    saved = sys.stdin
    with open(os.devnull) as null:
        sys.stdin = null
        try:
            yield
        finally:
            sys.stdin = saved


def render_case(recipe: Path, kind: str, plan_dir: Path) -> tuple[int, str, Path]:
    """(exit code, printed output, experiment folder) of one dry run."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), no_stdin():
        code = main(launch_argv(recipe, kind, plan_dir))
    return code, out.getvalue(), plan_dir / "experiments" / "nemo-qwenlong" / f"{recipe.stem}-{kind}"


def snapshot_text(folder: Path, kind: str) -> str:
    """The sbatch script (Slurm) and every task script, each under a header line."""
    files = [folder / f"{kind}_sbatch.sh"] + sorted((folder / kind / "scripts").glob("*.sh"))
    parts = [f"===== {f.relative_to(folder)}\n{f.read_text()}" for f in files if f.is_file()]
    return "\n".join(p if p.endswith("\n") else p + "\n" for p in parts)


def snapshot_path(recipe: Path, kind: str) -> Path:
    return SNAPSHOTS / recipe.stem / f"{kind}.txt"
