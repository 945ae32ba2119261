"""Run directories: `<runs_dir>/<name>-<UTC timestamp>/` with the resolved config written first."""

from __future__ import annotations

import time
from pathlib import Path

from nemo_qwenlong.config import RunConfig, write_run_config


def create_run_dir(cfg: RunConfig, explicit: str | Path | None = None) -> Path:
    """Create the run directory (or reuse `explicit`) and write the resolved config into it."""
    if explicit is not None:
        run_dir = Path(explicit)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        run_dir = Path(cfg.runs_dir) / f"{cfg.name}-{stamp}"
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = Path(cfg.runs_dir) / f"{cfg.name}-{stamp}-{suffix}"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(cfg, run_dir)
    return run_dir
