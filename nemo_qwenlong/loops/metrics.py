"""`metrics.jsonl`: one row per training step (an SFT optimiser step or an RL step), each exactly once.

Rows are keyed by (phase, step). A resumed run first drops the rows past the checkpoint it resumes
from (they belong to steps that will be run again), so after any number of kills the file holds
each step once, in order. Optional wandb mirror (offline unless configured online).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from nemo_qwenlong.fsio import atomic_write_text

log = logging.getLogger(__name__)
PHASE_ORDER = {"sft": 0, "rl": 1}


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill mid-write: the step reruns
                break
    return rows


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    def __init__(self, path: Path, *, wandb_run: Any = None) -> None:
        self.path = path
        self.wandb = wandb_run

    def truncate_after(self, phase: str, step: int) -> int:
        """Keep rows up to (phase, step) in run order; returns how many were dropped."""
        rows = read_rows(self.path)
        limit = (PHASE_ORDER[phase], step)
        kept = [r for r in rows if (PHASE_ORDER[r["phase"]], r["step"]) <= limit]
        if len(kept) != len(rows):
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        return len(rows) - len(kept)

    def write(self, row: dict[str, Any]) -> None:
        row = {k: _clean(v) for k, v in row.items()}
        with self.path.open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(row) + "\n")
            sink.flush()
        if self.wandb is not None:
            numbers = {f"{row['phase']}/{k}": v for k, v in row.items() if isinstance(v, (int, float))}
            self.wandb.log(numbers)

    def rows(self, phase: str | None = None) -> list[dict[str, Any]]:
        return [r for r in read_rows(self.path) if phase is None or r["phase"] == phase]


def start_wandb(cfg: Any, run_dir: Path) -> Any:
    """A wandb run when logging.wandb.enable (offline by default; never sends secrets: only metrics)."""
    w = cfg.logging.wandb
    if not w.enable:
        return None
    import wandb

    return wandb.init(project=w.project, entity=w.entity, mode=w.mode, dir=str(run_dir), name=run_dir.name,
                      resume="allow", id=run_dir.name.replace("/", "-"))
