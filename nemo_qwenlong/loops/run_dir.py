"""The run directory of `run`: its options, its checks on start and resume, and the stage folders.

    <run dir>/config.yaml            the resolved config (a resume must match it)
    <run dir>/NN-<stage>/stage.json  written when the stage is done (`mark_done`); `--resume auto` skips it
    <run dir>/NN-<stage>/checkpoints/, or with checkpoint.dir set
    <checkpoint.dir>/<run dir name>/NN-<stage>/checkpoints/   (`checkpoint_dirs`)
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nemo_qwenlong.config import RunConfig
from nemo_qwenlong.config.loader import to_yaml
from nemo_qwenlong.fsio import atomic_write_text
from nemo_qwenlong.loops import dist

STAGE_JSON = "stage.json"
CHECKPOINTS = "checkpoints"


class RunError(RuntimeError):
    """An anticipated problem (bad output folder, resume mismatch): the CLI prints it and exits 2."""


@dataclass
class RunOptions:
    output: Path | None = None
    resume: str = "auto"  # auto | never
    max_steps: int | None = None
    progress: bool = True


def config_hash(cfg: RunConfig) -> str:
    return hashlib.sha1(to_yaml(cfg).encode()).hexdigest()[:16]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip("."): tree}


# Where a run executes, not what it computes: a requeued or resubmitted Slurm job gets other nodes (the
# launched judge's address changes) and may carry another time limit or account (nemo_qwenlong.launch).
RESUME_MAY_DIFFER = ("cluster.", "reward.judge.base_url")


def config_differences(saved: dict, current: dict) -> list[str]:
    a, b = _flatten(saved), _flatten(current)
    keys = [k for k in sorted(set(a) | set(b)) if not k.startswith(RESUME_MAY_DIFFER)]
    return [f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def open_run_dir(cfg: RunConfig, opts: RunOptions) -> tuple[Path, bool]:
    """(run dir, resuming?) after the checks; writes config.yaml for a new run."""
    run_dir = opts.output or Path(cfg.runs_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    saved = run_dir / "config.yaml"
    resuming = dist.broadcast(saved.is_file())  # rank 0's view: it writes the file below
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--output {run_dir} is a file, not a folder")
    if resuming and opts.resume == "never":
        raise RunError(f"{run_dir} already holds a run (config.yaml); use --resume auto to continue it, "
                       "or choose a new --output")
    if not resuming and run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} exists, is not empty and holds no run (no config.yaml); choose a new --output")
    elsewhere = checkpoint_home(cfg, run_dir)
    if not resuming and elsewhere is not None and elsewhere.is_dir() and any(elsewhere.iterdir()):
        raise RunError(f"checkpoint.dir: {elsewhere} holds checkpoints of an earlier run named {run_dir.name!r} and "
                       f"{run_dir} holds no run (no config.yaml) that they belong to; a new run would resume from "
                       "them. Move them away, or choose another --output (its folder name names the checkpoints)")
    if resuming:
        diffs = config_differences(yaml.safe_load(saved.read_text()), yaml.safe_load(to_yaml(cfg)))
        if diffs:
            raise RunError(f"{run_dir} was started with another config; resuming it would not reproduce the run. "
                           "Differences:\n  " + "\n  ".join(diffs))
    elif dist.is_rank0():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, to_yaml(cfg))
    dist.barrier()
    return run_dir, resuming


def stage_dirs(cfg: RunConfig, run_dir: Path) -> dict[str, Path]:
    names: list[str] = []
    for stage in cfg.pipeline:
        names += [f"rl-{s.name}" for s in cfg.curriculum.stages] if stage == "rl" else [stage]
    return {n: run_dir / f"{i:02d}-{n}" for i, n in enumerate(names)}


def checkpoint_home(cfg: RunConfig, run_dir: Path) -> Path | None:
    """<checkpoint.dir>/<run dir name>, this run's share of checkpoint.dir; None when it is not set."""
    return None if cfg.checkpoint.dir is None else Path(cfg.checkpoint.dir) / run_dir.resolve().name


def checkpoint_dirs(cfg: RunConfig, run_dir: Path, dirs: dict[str, Path]) -> dict[str, Path]:
    """Each stage's checkpoint folder (save and resume): `<stage folder>/checkpoints`, or, with checkpoint.dir
    set (a large filesystem), `<checkpoint.dir>/<run dir name>/<stage folder name>/checkpoints`."""
    home = checkpoint_home(cfg, run_dir)
    return {n: (d if home is None else home / d.name) / CHECKPOINTS for n, d in dirs.items()}


def stage_done(folder: Path) -> dict[str, Any] | None:
    """The stage's `stage.json`, as rank 0 reads it (every rank must take the same branch: a rank
    that looked after rank 0 wrote the file would skip the collective `mark_done`)."""
    path = folder / STAGE_JSON
    return dist.broadcast(json.loads(path.read_text()) if dist.is_rank0() and path.is_file() else None)


def mark_done(folder: Path, info: dict[str, Any]) -> None:
    if dist.is_rank0():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / STAGE_JSON, json.dumps({"done": True, **info}, indent=2, default=str))
    dist.barrier()
