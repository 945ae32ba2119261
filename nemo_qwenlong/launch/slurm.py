"""Render a LaunchPlan with nemo-run: a SlurmExecutor per task group (a heterogeneous job when the judge
has its own node; one job whose steps keep their own srun flags when it shares the first node), or the
LocalExecutor; dry run (write the sbatch and scripts) or submit.

nemo-run is imported here only (the container does not carry it: the launcher runs on the login node).
Layout nemo-run writes (`<base>/experiments/<TITLE>/<run name>/`): `<kind>_sbatch.sh`, and
`<kind>/scripts/<kind>-<i>.sh` (one per task), `<kind>/configs/`. On the cluster the job's folder is
`<cluster.job_dir>/<run name>/<kind>/` (scripts and logs), mounted at /nemo_run in every container.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_qwenlong.config.schema import ClusterConfig
from nemo_qwenlong.launch.plan import (
    JUDGE_HOST_VAR,
    MASTER_ADDR_VAR,
    LaunchError,
    LaunchPlan,
    Task,
    check_no_secrets,
)
from nemo_qwenlong.launch.requeue import PREEMPTED_NAME, requeue_lines

TITLE = "nemo-qwenlong"


@dataclass(frozen=True)
class Rendered:
    """What a launch wrote: the experiment folder, the sbatch script (Slurm) and the task scripts."""

    folder: Path
    sbatch: Path | None
    scripts: tuple[Path, ...]
    cluster_folder: str | None  # the same folder on the cluster (Slurm), mounted at /nemo_run


def nemo_run() -> Any:
    """The nemo_run module. Its import chain (nemo_run.core.execution.lepton -> leptonai.photon ->
    fastapi.middleware.wsgi -> starlette.middleware.wsgi) prints a StarletteDeprecationWarning (a UserWarning,
    shown by default) on every launch; that one warning is ignored while importing, nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"starlette\.middleware\.wsgi is deprecated", category=UserWarning)
        import nemo_run as run
    return run


def cluster_job_folder(cluster: ClusterConfig, plan: LaunchPlan) -> str:
    """Where nemo-run puts this job's folder on the cluster: <job_dir>/<experiment id = run name>/<job name = kind>."""
    return f"{str(cluster.job_dir).rstrip('/')}/{plan.run_name}/{plan.kind}"


def check_slurm(cluster: ClusterConfig, plan: LaunchPlan) -> None:
    """The fields a Slurm launch needs beyond the schema's checks."""
    if not cluster.job_dir or not cluster.job_dir.startswith("/"):
        raise LaunchError(f"cluster.job_dir = {cluster.job_dir!r}: a Slurm launch needs the absolute login-node folder "
                          "on the shared filesystem where nemo-run writes scripts and logs; accepted: e.g. "
                          "/lustre/<project>/nemo-qwenlong/jobs, set in the cluster file")
    if plan.run_dir is not None and not plan.run_dir.startswith("/"):
        raise LaunchError(f"runs_dir = {plan.run_dir.rsplit('/', 1)[0]!r} is relative; on a cluster the run directory "
                          "must be an absolute path inside the container on a mounted shared filesystem; accepted: "
                          "runs_dir: /runs in the cluster file (with a container_mounts entry for it)")
    check_no_secrets([f"{k}={v}" for k, v in cluster.env_vars.items()], "cluster.env_vars")


def _setup_lines(cluster: ClusterConfig, plan: LaunchPlan) -> str:
    """Batch-script lines before the sruns (first node, outside the container): addresses, secrets, requeue."""
    lines = ["# nemo-qwenlong launch: addresses inside this allocation",
             f'export {MASTER_ADDR_VAR}=$(scontrol show hostnames "${{SLURM_JOB_NODELIST_HET_GROUP_0:-$SLURM_JOB_NODELIST}}"'
             " | head -n1)"]
    if plan.judge_group is not None:
        lines.append(f'export {JUDGE_HOST_VAR}=$(scontrol show hostnames '
                     f'"$SLURM_JOB_NODELIST_HET_GROUP_{plan.judge_group}" | head -n1)')
    elif plan.judge_on_first_node:
        lines.append(f'export {JUDGE_HOST_VAR}="${{{MASTER_ADDR_VAR}}}"  # the judge shares the first node')
    for name in plan.required_secrets:  # `${X+set}` so that `set -x` never prints a value
        lines.append(f'if [ -z "${{{name}+set}}" ]; then echo "nemo-qwenlong: set {name} in the submitting shell '
                     f'(passed to the container by name)"; exit 2; fi')
    if plan.requeue:
        lines.append(requeue_lines(f"{cluster_job_folder(cluster, plan)}/{PREEMPTED_NAME}", cluster.max_requeues))
    return "\n".join(lines)


def _executor(cluster: ClusterConfig, plan: LaunchPlan, tasks: list[Task], first: bool) -> Any:
    run = nemo_run()

    task = tasks[0]
    extra: dict[str, Any] = {}
    if first:
        extra = {"setup_lines": _setup_lines(cluster, plan), "signal": f"USR1@{cluster.requeue_signal_lead_s}"
                 if plan.requeue else None}
    return run.SlurmExecutor(
        account=cluster.account, partition=cluster.partition, qos=cluster.qos, constraint=cluster.constraint,
        time=cluster.time, nodes=task.nodes, ntasks_per_node=1, gpus_per_node=task.gpus_per_node or None,
        mem=cluster.mem, exclusive=cluster.exclusive or None, container_image=cluster.container_image,
        container_mounts=list(cluster.container_mounts), container_env=list(plan.secret_env) or None,
        env_vars=dict(cluster.env_vars), srun_args=list(task.srun_args) or None,
        job_name_prefix=f"{cluster.account}-nql.", tunnel=run.LocalTunnel(job_dir=cluster.job_dir),
        packager=run.Packager(), **extra,
    )


def _slurm_job(cluster: ClusterConfig, plan: LaunchPlan) -> tuple[Any, Any]:
    """(task or task list, executor or executor list) for `Experiment.add`."""
    run = nemo_run()

    check_slurm(cluster, plan)
    scripts = [run.Script(inline=t.script) for t in plan.tasks]
    executors = [_executor(cluster, plan, [t], first=i == 0) for i, t in enumerate(plan.tasks)]
    if len(plan.tasks) == 1:
        return scripts[0], executors[0]
    if len({t.group for t in plan.tasks}) == 1:  # one component, several steps on its nodes (eval server + client)
        same = len({(t.nodes, t.srun_args) for t in plan.tasks}) == 1
        return scripts, executors[0] if same else executors  # a list: each step keeps its own srun flags
    for ex in executors:  # a heterogeneous job: the judge on its own node(s)
        ex.heterogeneous = True
    executors[0].het_group_indices = [t.group for t in plan.tasks]
    return scripts, executors


def _local_job(plan: LaunchPlan) -> tuple[Any, Any]:
    run = nemo_run()

    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # nemo-run runs `python` on PATH
    return run.Script(inline=plan.tasks[0].script), run.LocalExecutor(env_vars={"PATH": path})


def render(cluster: ClusterConfig, plan: LaunchPlan, base: Path, submit: bool) -> Rendered:
    """Write the plan under `base` (nemo-run's experiments folder); with `submit`, also run it: sbatch on
    Slurm (the login node's `sbatch`), the task itself with the local executor."""
    run = nemo_run()

    slurm = cluster.executor == "slurm"
    if slurm and submit and shutil.which("sbatch") is None:
        raise LaunchError("sbatch is not on PATH: submitting needs a Slurm login node; accepted: run there, or "
                          "--dry-run to write the plan here")
    folder = base / "experiments" / TITLE / plan.run_name
    if folder.exists():
        raise LaunchError(f"{folder} already holds a plan; accepted: another --run-name, or remove the folder")
    task, executor = _slurm_job(cluster, plan) if slurm else _local_job(plan)
    exp = run.Experiment(TITLE, id=plan.run_name, base_dir=str(base), log_level="ERROR", clean_mode=True,
                         enable_goodbye_message=False, skip_status_at_exit=True)
    with exp:
        exp.add(task, executor=executor, name=plan.kind)
        if submit:  # writes the same files as the dry run, then submits
            exp.run(detach=slurm, tail_logs=False)
        else:
            exp.dryrun(log=False, delete_exp_dir=False)
    if submit and not slurm:
        _check_local(exp)
    sbatch = folder / f"{plan.kind}_sbatch.sh"
    scripts = tuple(sorted((folder / plan.kind / "scripts").glob("*.sh")))
    return Rendered(folder, sbatch if sbatch.is_file() else None, scripts,
                    cluster_job_folder(cluster, plan) if slurm else None)


def _check_local(exp: Any) -> None:
    status = exp.status(return_dict=True) or {}
    failed = {name: str(info.get("status")) for name, info in status.items()
              if "SUCCEEDED" not in str(info.get("status", "")).upper()}
    if failed:
        raise LaunchError(f"the local job did not succeed: {failed}; its log is under {exp._exp_dir}")
