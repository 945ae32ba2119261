"""Requeue on preemption: the training job marks "checkpoint written, stopped early" and the batch script,
on the login side of the container, requeues the job when it sees the mark (docs/launch.md).

Slurm sends SIGUSR1 `cluster.requeue_signal_lead_s` before the time limit (sbatch --signal) to every
process of the job's steps; the loops finish the step, checkpoint and exit 0 (loops.preemption). Exit 0
alone cannot tell "done" from "stopped early", so rank 0 touches the file named by PREEMPTED_FILE_ENV,
which the launcher points into nemo-run's job folder (mounted at /nemo_run in the container).
"""

from __future__ import annotations

import os
from pathlib import Path

PREEMPTED_FILE_ENV = "NQL_PREEMPTED_FILE"
PREEMPTED_NAME = "preempted"  # inside nemo-run's job folder: /nemo_run/preempted in the container


def mark_preempted() -> Path | None:
    """Touch the preemption mark when a launcher asked for one (rank 0 only); returns its path."""
    target = os.environ.get(PREEMPTED_FILE_ENV)
    if not target or os.environ.get("RANK", "0") != "0":
        return None
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def requeue_lines(host_mark: str, max_requeues: int) -> str:
    """Batch-script lines (run on the first node, outside the container) that requeue the job at exit when
    the training job left the preemption mark, at most `max_requeues` times (SLURM_RESTART_COUNT)."""
    return f"""# nemo-qwenlong: requeue on preemption. The loops checkpoint on SIGUSR1/SIGTERM, exit 0 and leave
# {host_mark}; at exit this script requeues the job (same run dir: it resumes).
nql_requeue_if_preempted() {{
    if [ -f "{host_mark}" ]; then
        rm -f "{host_mark}"
        if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {max_requeues} ]; then
            echo "nemo-qwenlong: stopped early with a checkpoint; requeueing job $SLURM_JOB_ID"
            scontrol requeue "$SLURM_JOB_ID"
        else
            echo "nemo-qwenlong: stopped early with a checkpoint; {max_requeues} requeues used, not requeueing"
        fi
    fi
}}
trap nql_requeue_if_preempted EXIT"""
