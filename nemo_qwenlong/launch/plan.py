"""Launch plans: which tasks a `nemo-qwenlong launch KIND` job runs, on what, with which command.

Pure Python (no nemo-run import): `slurm.py` renders a plan with nemo-run. One builder per kind, by name
(PLANS). A plan's tasks run in the container; their scripts are exactly what the cluster executes:

    sft / rl / run   the trainer: multi-node torchrun of `nemo-qwenlong run` on the recipe's resolved config
                     (written into the script), plus the judge task when the reward uses a launched judge
                     (cluster.judge.placement: a node of its own, or the first trainer node's first GPUs)
    eval             the model server (`vllm serve --model`) and the client (`nemo-qwenlong eval`) on one node,
                     plus the judge task (placed the same way)
    judge            the judge alone; it writes its address to <job folder>/judge_url for other jobs
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from nemo_qwenlong.config import RunConfig, check_runnable
from nemo_qwenlong.config.loader import validate_tree
from nemo_qwenlong.launch.requeue import PREEMPTED_FILE_ENV, PREEMPTED_NAME
from nemo_qwenlong.planning.hardware import geometry_of
from nemo_qwenlong.planning.layout import replicas_text, vllm_tp_problems
from nemo_qwenlong.planning.report import judge_on_trainer_gpus
from nemo_qwenlong.redact import REDACTED, redact_text, redact_tree

KINDS = ("sft", "rl", "run", "eval", "judge")
JOB_MOUNT = "/nemo_run"  # nemo-run mounts its job folder here in every container
JUDGE_HOST_VAR, MASTER_ADDR_VAR = "NQL_JUDGE_HOST", "NQL_MASTER_ADDR"
EVAL_SERVED_NAME = "eval-model"
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"  # torchrun forwards these to the workers
IGNORE_TIME_WARNING = "trap '' USR1  # Slurm's time-limit warning is for the trainer; servers run until the job ends"
VLLM_SERVE_MEMORY = 0.9  # vllm serve's default --gpu-memory-utilization (the eval server's share on its own node)
# srun flags of a judge that shares the first node of the job's allocation (cluster.judge.placement: trainer_node):
# one task on relative node 0, sharing that node's GPUs with the step already running there
SHARED_JUDGE_SRUN = ("--nodes=1", "--ntasks=1", "--relative=0", "--overlap")


class LaunchError(Exception):
    """A plan that cannot be built from this recipe, cluster file and arguments (exit 2)."""


@dataclass(frozen=True)
class Task:
    """One srun: a bash script run in the container on `nodes` nodes (one task per node)."""

    name: str
    script: str
    nodes: int
    gpus_per_node: int
    group: int = 0  # heterogeneous-job component; tasks of one group share its nodes
    srun_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class LaunchPlan:
    kind: str
    run_name: str
    run_dir: str | None
    tasks: tuple[Task, ...]
    requeue: bool  # a training job: SIGUSR1 before the time limit, requeue on the preemption mark
    secret_env: tuple[str, ...] = ()  # passed into the container by name, checked set at submission
    required_secrets: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    judge_on_first_node: bool = False  # the judge shares the job's first node (its host is NQL_MASTER_ADDR)

    @property
    def judge_group(self) -> int | None:
        return next((t.group for t in self.tasks if t.name == "judge" and t.group > 0), None)


@dataclass(frozen=True)
class LaunchOptions:
    run_name: str
    model: str | None = None  # eval: the HF folder to evaluate (inside the container)
    recipe: str = "the recipe"  # names the recipe in refusals (the path as given)


# ---- the resolved config travels inside the trainer's script ------------------------------------

def minimal_config_yaml(cfg: RunConfig) -> str:
    """The config as YAML with only the values that differ from the schema defaults (what a recipe holds):
    loading it gives `cfg` back. Refuses a credential-looking value: scripts must never hold one."""
    tree = cfg.model_dump(mode="json", exclude_defaults=True)
    leaked = _redacted_keys(redact_tree(tree), tree)
    if leaked:
        raise LaunchError(f"the resolved config holds credential-looking values at {', '.join(leaked)}; launch scripts "
                          "are written to the cluster's job folder, accepted: secrets only through environment "
                          "variables named in cluster.secret_env / reward.judge.api_key_env")
    if validate_tree(tree).model_dump() != cfg.model_dump():  # the defaults-only dump must mean the same run
        raise LaunchError("the minimal config does not resolve to the same run (a bug in nemo-qwenlong launch)")
    return yaml.safe_dump(tree, sort_keys=False, default_flow_style=False)


def _redacted_keys(redacted: Any, original: Any, prefix: str = "") -> list[str]:
    if isinstance(original, dict):
        return [k for key in original for k in _redacted_keys(redacted[key], original[key], f"{prefix}{key}.")]
    if isinstance(original, list):
        return [k for i, v in enumerate(original) for k in _redacted_keys(redacted[i], v, f"{prefix}{i}.")]
    return [prefix.rstrip(".")] if redacted != original and REDACTED in str(redacted) else []


# ---- pieces of scripts ---------------------------------------------------------------------------

def _quote(words: list[str]) -> str:
    """Shell words; `${VAR}` references stay expandable (double quotes), everything else single-quoted."""
    return " ".join(f'"{w}"' if "${" in w and '"' not in w else shlex.quote(w) for w in words)


def _script(header: str, *blocks: str) -> str:
    return "\n".join([f"# nemo-qwenlong launch: {header}", "set -euo pipefail", *[b for b in blocks if b]]) + "\n"


def _wait(url: str, timeout_s: int) -> str:
    return _quote(["python", "-m", "nemo_qwenlong.launch.wait_ready", url, "--timeout-s", str(timeout_s)])


def _judge_needed(cfg: RunConfig, kind: str) -> bool:
    if kind == "sft":  # no reward in warm-up SFT
        return False
    return kind == "judge" or cfg.reward.judge_when != "never"


def _judge_launched(cfg: RunConfig, kind: str) -> bool:
    return _judge_needed(cfg, kind) and (kind == "judge" or cfg.cluster.judge.launch)


def _judge_task(cfg: RunConfig, group: int, publish: bool, shared: bool = False) -> Task:
    j = cfg.cluster.judge
    if not j.model_path:
        raise LaunchError("the judge is launched (cluster.judge.launch: true, reward.judge_when: "
                          f"{cfg.reward.judge_when}) but cluster.judge.model_path is null; accepted: the judge's HF "
                          "folder inside the container, or cluster.judge.launch=false with an external "
                          "reward.judge.base_url, or reward.judge_when=never")
    serve = ["vllm", "serve", j.model_path, "--served-model-name", cfg.reward.judge.model, "--host", "0.0.0.0",
             "--port", str(j.port), "--tensor-parallel-size", str(j.gpus), "--max-model-len", str(j.max_model_len),
             *(["--gpu-memory-utilization", str(j.gpu_memory_utilization)] if shared else []), *j.extra_args]
    address = f'echo "http://$(hostname):{j.port}/v1" > {JOB_MOUNT}/judge_url  # for jobs that use this judge'
    if not shared:
        return Task("judge", _script(f"the judge ({cfg.reward.judge.model}) on its own node", IGNORE_TIME_WARNING,
                                     address if publish else "", "exec " + _quote(serve)),
                    nodes=1, gpus_per_node=j.gpus, group=group)
    devices = ",".join(str(i) for i in range(j.gpus))
    which = f"GPU {devices}" if j.gpus == 1 else f"GPUs {devices}"
    pin = (f"export CUDA_VISIBLE_DEVICES={devices}  # {which} of the job's first node, shared with the step running "
           f"there; the judge takes {j.gpu_memory_utilization} of each (counted by `nemo-qwenlong plan`)")
    return Task("judge", _script(f"the judge ({cfg.reward.judge.model}) on the job's first node, sharing its GPUs",
                                 IGNORE_TIME_WARNING, pin, "exec " + _quote(serve)),
                nodes=1, gpus_per_node=j.gpus, group=group, srun_args=(*cfg.cluster.srun_args, *SHARED_JUDGE_SRUN))


def _judge_url(cfg: RunConfig) -> str:
    return f"http://${{{JUDGE_HOST_VAR}}}:{cfg.cluster.judge.port}"


def _secrets(cfg: RunConfig, kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names passed by name, names that must be set when the job is submitted)."""
    required = list(cfg.cluster.secret_env)
    if cfg.logging.wandb.enable and cfg.logging.wandb.mode == "online" and kind in ("sft", "rl", "run"):
        required.append("WANDB_API_KEY")
    passed = list(required)
    if _judge_needed(cfg, kind) and not _judge_launched(cfg, kind):
        passed.append(cfg.reward.judge.api_key_env)  # an external judge; 'EMPTY' when unset (vLLM needs none)
    return tuple(dict.fromkeys(passed)), tuple(dict.fromkeys(required))


# ---- the trainer (sft, rl, run) --------------------------------------------------------------------

def _trainer_command(cfg: RunConfig, run_dir: str, judge: bool) -> list[str]:
    c = cfg.cluster
    run = ["-m", "nemo_qwenlong.cli.main", "run", "${NQL_CONFIG}", "--output", run_dir, "--no-progress"]
    if judge:
        run.append(f"reward.judge.base_url={_judge_url(cfg)}/v1")
    if c.executor == "local" or c.gpus_per_node == 0:
        return ["python", *run]
    return ["torchrun", "--nnodes", str(c.nodes), "--nproc-per-node", str(c.gpus_per_node),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"${{{MASTER_ADDR_VAR}}}:{c.rdzv_port}",
            "--rdzv-id", "${SLURM_JOB_ID}", "--signals-to-handle", TORCHRUN_SIGNALS,
            "--shutdown-timeout", str(c.requeue_signal_lead_s), *run]


def _rollout_line(cfg: RunConfig) -> str:
    """The rollout engines of this job, as a comment in the trainer's script."""
    r, c = cfg.rollout, cfg.cluster
    if r.backend != "vllm":
        return f"# rollout: {r.backend} engine on rank 0"
    world = c.nodes * c.gpus_per_node if c.executor == "slurm" and c.gpus_per_node else 1
    t, line = r.tensor_parallel, f"# rollout replicas: {replicas_text(world, r.tensor_parallel)} vLLM engine"
    if world == 1:
        return f"{line} inside the trainer process"
    where = f"replica r on ranks {t}r..{t}r+{t - 1}" if t > 1 else "one per rank"
    return f"{line}s inside the trainer ranks, {where} (rollout.tensor_parallel={t})"


def _trainer_plan(cfg: RunConfig, opts: LaunchOptions, kind: str) -> LaunchPlan:
    check_runnable(cfg, opts.recipe)  # what `run` would refuse after the job waited in the queue
    runs_dir = cfg.runs_dir if cfg.cluster.executor == "slurm" else os.path.abspath(cfg.runs_dir)  # local: any cwd
    run_dir = f"{runs_dir.rstrip('/')}/{opts.run_name}"
    judge = _judge_launched(cfg, kind)
    slurm = cfg.cluster.executor == "slurm"
    wait = _wait(f"{_judge_url(cfg)}/health", cfg.cluster.judge.ready_timeout_s) if judge else ""
    script = _script(
        f"{kind} of {cfg.name}: {cfg.cluster.nodes} node(s) x {cfg.cluster.gpus_per_node} GPU(s), pipeline "
        f"{', '.join(cfg.pipeline)}",
        _rollout_line(cfg) if "rl" in cfg.pipeline else "",
        f"export {PREEMPTED_FILE_ENV}={JOB_MOUNT}/{PREEMPTED_NAME}  # tells the batch script to requeue" if slurm else "",
        'NQL_CONFIG="$(mktemp -t nql-config-XXXXXX.yaml)"',
        f"cat > \"$NQL_CONFIG\" <<'NQL_CONFIG_EOF'\n{minimal_config_yaml(cfg)}NQL_CONFIG_EOF",
        wait,
        "exec " + _quote(_trainer_command(cfg, run_dir, judge)),
    )
    shared = judge and judge_on_trainer_gpus(cfg)  # where `plan` counts its share (`launch judge`: own node)
    overlap = ("--overlap",) if shared else ()  # the judge's step shares the first node's GPUs with this one
    tasks = [Task("trainer", script, cfg.cluster.nodes, cfg.cluster.gpus_per_node,
                  srun_args=(*cfg.cluster.srun_args, *overlap))]
    if judge:
        tasks.append(_judge_task(cfg, group=0 if shared else 1, publish=False, shared=shared))
    passed, required = _secrets(cfg, kind)
    return LaunchPlan(kind, opts.run_name, run_dir, tuple(tasks), requeue=slurm, secret_env=passed,
                      required_secrets=required, judge_on_first_node=shared)


def _with_pipeline(cfg: RunConfig, stages: list[str], kind: str) -> RunConfig:
    if "rl" in stages and "rl" not in cfg.pipeline and kind == "rl":
        raise LaunchError(f"launch rl: the recipe's pipeline {list(cfg.pipeline)} has no 'rl' stage; accepted: a "
                          "recipe with rl in its pipeline")
    return cfg.model_copy(update={"pipeline": stages})


def sft_plan(cfg: RunConfig, opts: LaunchOptions) -> LaunchPlan:
    """Warm-up SFT only: pipeline data, sft (the SFT checkpoint is <run dir>/01-sft/hf)."""
    return _trainer_plan(_validated(_with_pipeline(cfg, ["data", "sft"], "sft")), opts, "sft")


def rl_plan(cfg: RunConfig, opts: LaunchOptions) -> LaunchPlan:
    """The recipe's RL stages without SFT and eval: its pipeline's data, rl, export."""
    stages = [s for s in cfg.pipeline if s in ("data", "rl", "export")]
    return _trainer_plan(_validated(_with_pipeline(cfg, stages, "rl")), opts, "rl")


def run_plan(cfg: RunConfig, opts: LaunchOptions) -> LaunchPlan:
    """The recipe's whole pipeline, as `nemo-qwenlong run` runs it."""
    return _trainer_plan(cfg, opts, "run")


def _validated(cfg: RunConfig) -> RunConfig:
    return validate_tree(cfg.model_dump(mode="json"), source="launch pipeline")


# ---- eval and judge ------------------------------------------------------------------------------

def _eval_client(cfg: RunConfig, model: str, out: str, judge: bool) -> list[str]:
    e, c = cfg.evaluation, cfg.cluster
    words = ["nemo-qwenlong", "eval", "--model", model, "--server-url", f"http://127.0.0.1:{c.eval_port}/v1",
             "--served-model-name", EVAL_SERVED_NAME, "--benchmarks", str(e.benchmarks), "--output", out,
             "--temperature", str(e.temperature), "--top-p", str(e.top_p),
             "--max-new-tokens", str(e.max_new_tokens or cfg.rollout.max_new_tokens),
             "--max-input-tokens", str(e.max_input_tokens), "--samples", str(e.samples), "--no-progress"]
    if e.data_dir:
        words += ["--data-dir", e.data_dir]
    if cfg.reward.judge_when != "never":
        url = f"{_judge_url(cfg)}/v1" if judge else cfg.reward.judge.base_url
        words += ["--judge-url", url, "--judge-model", cfg.reward.judge.model,
                  "--judge-api-key-env", cfg.reward.judge.api_key_env]
    return words


def _slurm_only(cfg: RunConfig, kind: str) -> None:
    if cfg.cluster.executor != "slurm":
        raise LaunchError(f"launch {kind} runs on Slurm (cluster.executor: slurm, got {cfg.cluster.executor!r}); "
                          "accepted here: sft, rl, run with the local executor, or `nemo-qwenlong eval` directly")


def eval_server_parallel(cfg: RunConfig) -> tuple[int, int]:
    """(tensor, data) parallel sizes of the eval server on one node: the largest tensor-parallel size that
    divides cluster.gpus_per_node and that vLLM accepts for the model (R1-Distill-Qwen-7B's 28 heads refuse 8),
    data-parallel over the rest; all GPUs as one TP group when the model's shape is unknown."""
    gpus, m = cfg.cluster.gpus_per_node, cfg.model
    try:
        g = geometry_of(m.source, m.path, m.tiny.model_dump(), m.geometry)
    except ValueError:  # model.geometry contradicts model.path: the config's check names it where it applies
        g = None
    if g is None:
        return gpus, 1
    tp = max(t for t in range(1, gpus + 1) if gpus % t == 0 and not vllm_tp_problems(g, t, "eval tensor-parallel"))
    return tp, gpus // tp


def eval_plan(cfg: RunConfig, opts: LaunchOptions) -> LaunchPlan:
    """The DocQA evaluation of `opts.model`: its server and the client on one node (+ the judge)."""
    _slurm_only(cfg, "eval")
    if not opts.model:
        raise LaunchError("launch eval needs --model, the HF folder to evaluate inside the container, e.g. "
                          "<run dir>/03-export/hf")
    if not cfg.evaluation.benchmarks:
        raise LaunchError("launch eval: evaluation.benchmarks is null (the held-out set is the run's own eval "
                          "stage); accepted: e.g. evaluation.benchmarks=docmath,frames,2wikimqa,hotpotqa,musique,"
                          "narrativeqa,qasper with evaluation.data_dir")
    c, e = cfg.cluster, cfg.evaluation
    out = f"{cfg.runs_dir.rstrip('/')}/{opts.run_name}"
    max_len = e.max_input_tokens + (e.max_new_tokens or cfg.rollout.max_new_tokens) + 64
    tp, dp = eval_server_parallel(cfg)
    serve = ["vllm", "serve", opts.model, "--served-model-name", EVAL_SERVED_NAME, "--host", "127.0.0.1",
             "--port", str(c.eval_port), "--tensor-parallel-size", str(tp),
             *(["--data-parallel-size", str(dp)] if dp > 1 else []), "--max-model-len", str(max_len)]
    judge = _judge_launched(cfg, "eval")
    shared = judge and judge_on_trainer_gpus(cfg)
    if shared:  # the judge holds its share of the first GPU(s) first: the server takes what is left
        serve += ["--gpu-memory-utilization", f"{VLLM_SERVE_MEMORY - c.judge.gpu_memory_utilization:.2f}"]
    server = Task("eval-server", _script(f"eval server for {opts.model}", IGNORE_TIME_WARNING, "exec " + _quote(serve)),
                  1, c.gpus_per_node, srun_args=(*c.srun_args, "--overlap"))
    waits = [_wait(f"http://127.0.0.1:{c.eval_port}/health", c.judge.ready_timeout_s)]
    if judge:
        waits.append(_wait(f"{_judge_url(cfg)}/health", c.judge.ready_timeout_s))
    client = Task("eval-client", _script(f"eval client ({e.benchmarks})", *waits,
                                         "exec " + _quote(_eval_client(cfg, opts.model, out, judge))),
                  1, c.gpus_per_node, srun_args=(*c.srun_args, "--overlap"))
    tasks = [server, client] + ([_judge_task(cfg, group=0 if shared else 1, publish=False, shared=shared)]
                                if judge else [])
    passed, required = _secrets(cfg, "eval")
    return LaunchPlan("eval", opts.run_name, out, tuple(tasks), requeue=False, secret_env=passed,
                      required_secrets=required, judge_on_first_node=shared)


def judge_plan(cfg: RunConfig, opts: LaunchOptions) -> LaunchPlan:
    """The judge alone, for jobs that share it (they read <job folder>/judge_url)."""
    _slurm_only(cfg, "judge")
    task = _judge_task(cfg, group=0, publish=True)
    passed, required = _secrets(cfg, "judge")
    return LaunchPlan("judge", opts.run_name, None, (task,), requeue=False, secret_env=passed,
                      required_secrets=required)


PLANS: dict[str, Callable[[RunConfig, LaunchOptions], LaunchPlan]] = {
    "sft": sft_plan, "rl": rl_plan, "run": run_plan, "eval": eval_plan, "judge": judge_plan,
}


def site_problems(cfg: RunConfig, kind: str) -> list[str]:
    """Every site field a Slurm launch of `kind` needs that the recipe, cluster file and overrides leave unset,
    all at once (the builders and slurm.check_slurm would each stop at the first)."""
    if cfg.cluster.executor != "slurm":
        return []
    c, problems = cfg.cluster, []
    if not c.job_dir or not c.job_dir.startswith("/"):
        problems.append(f"cluster.job_dir = {c.job_dir!r}: the absolute login-node folder on the shared filesystem "
                        "where nemo-run writes scripts and logs, e.g. /lustre/<project>/nemo-qwenlong/jobs")
    if kind != "judge" and not cfg.runs_dir.startswith("/"):
        problems.append(f"runs_dir = {cfg.runs_dir!r} is relative: the run directories' parent must be an absolute "
                        "path inside the container, on a mounted shared filesystem, e.g. /runs")
    if _judge_launched(cfg, kind) and not c.judge.model_path:
        problems.append("cluster.judge.model_path is null: the judge's HF folder inside the container (or "
                        "cluster.judge.launch=false with an external reward.judge.base_url, or reward.judge_when=never)")
    return problems


def build_plan(kind: str, cfg: RunConfig, opts: LaunchOptions) -> LaunchPlan:
    """The plan of `kind` (one of KINDS) for this resolved config."""
    missing = site_problems(cfg, kind)
    if missing:
        raise LaunchError(f"{len(missing)} site field(s) unset for `launch {kind}` on Slurm:\n  - "
                          + "\n  - ".join(missing) + "\naccepted: set them in a cluster file and pass it as --cluster "
                          "conf/cluster/<site>.yaml (copy conf/cluster/example-slurm.yaml and fill it in), or as "
                          "KEY=VALUE overrides")
    return PLANS[kind](cfg, opts)


def check_no_secrets(words: list[str], where: str) -> None:
    """Refuse command-line values that look like credentials (they would be written into scripts)."""
    bad = [w.partition("=")[0] for w in words if redact_text(w) != w]
    if bad:
        raise LaunchError(f"{where} {', '.join(bad)}: the value looks like a credential and would be written into "
                          "the job's scripts; accepted: pass secrets through environment variables named in "
                          "cluster.secret_env / reward.judge.api_key_env")
