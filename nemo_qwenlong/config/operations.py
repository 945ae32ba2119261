"""Schema sections for checkpoints, logging and the cluster."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import model_validator

from nemo_qwenlong.config.base import Section, field, section
from nemo_qwenlong.redact import is_secret_name

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CheckpointConfig(Section):
    """Checkpoints: Megatron torch_dist shards + sampler/ledger/RNG state, written atomically."""

    dir: str | None = field(None, "folder for the checkpoints (a large filesystem): each stage's checkpoints/ is "
                            "<dir>/<run dir name>/<stage folder>/checkpoints; null: inside the stage folder "
                            "(docs/run.md). Resume: `run --resume`", min_length=1)
    save_every_steps: int = field(5, "save every N RL/SFT steps", ge=1)
    keep_last: int = field(3, "checkpoints kept on disk (older ones are deleted)", ge=1)


class WandbConfig(Section):
    """Weights & Biases logging (offline mode needs no network)."""

    enable: bool = field(False, "log to wandb")
    mode: Literal["online", "offline"] = field("offline", "online needs a network and WANDB_API_KEY")
    project: str = field("nemo-qwenlong", "wandb project", min_length=1)
    entity: str | None = field(None, "wandb entity (team)")


class LoggingConfig(Section):
    """Console, metrics file and wandb."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = field("INFO", "console log level")
    log_every_steps: int = field(1, "metrics every N steps", ge=1)
    val_every_steps: int = field(5, "validation every N steps (released: 5, and before training)", ge=1)
    val_before_train: bool = field(True, "validate at step 0")
    progress_bars: bool = field(True, "tqdm bars on long work (off in CI logs if you prefer)")
    wandb: WandbConfig = section(WandbConfig, "wandb")


class ClusterJudgeConfig(Section):
    """The LLM judge as its own `vllm serve` job beside `launch rl/run/eval` (docs/launch.md)."""

    launch: bool = field(True, "start the judge beside the job when reward.judge_when is not 'never'; false: "
                         "use reward.judge.base_url as given (an external API, key by name in reward.judge.api_key_env)")
    placement: Literal["own_node", "trainer_node"] = field(
        "own_node", "where `launch rl/run/eval` starts it: own_node, a heterogeneous-job node of its own (a whole node "
        "for `gpus` GPUs under exclusive); trainer_node, on the job's first node, sharing its first `gpus` GPUs with "
        "trainer ranks 0.. at gpu_memory_utilization each (`plan` and the GPU check count it; docs/launch.md)")
    gpu_memory_utilization: float = field(
        0.1, "placement trainer_node: share of each shared GPU's memory the judge's vLLM takes "
        "(vllm serve --gpu-memory-utilization); own_node: unused (vLLM's default on its own GPUs)", gt=0, lt=1)
    model_path: str | None = field(None, "the judge's HF folder inside the container, served as reward.judge.model "
                                   "(required when launch is true)")
    gpus: int = field(1, "GPUs of the judge's node it uses (its tensor-parallel size)", ge=1, le=16)
    port: int = field(8000, "port of the judge's OpenAI-compatible server", ge=1024, le=65535)
    max_model_len: int = field(8192, "judge context (question + gold + capped prediction + reply)", ge=512)
    ready_timeout_s: int = field(1800, "how long the trainer/eval client waits for the judge's /health", ge=30)
    extra_args: list[str] = field([], "more `vllm serve` flags, e.g. ['--gpu-memory-utilization', '0.9']")

    @model_validator(mode="after")
    def _one_memory_setting(self) -> "ClusterJudgeConfig":
        if self.placement == "trainer_node" and any(a.startswith("--gpu-memory-utilization") for a in self.extra_args):
            raise ValueError("cluster.judge.extra_args sets --gpu-memory-utilization, but with "
                             "cluster.judge.placement='trainer_node' the judge's share is "
                             "cluster.judge.gpu_memory_utilization (counted against the trainer's GPUs); accepted: "
                             "set it there and drop the flag from extra_args")
        return self


class ClusterConfig(Section):
    """Where the job runs: locally, or on Slurm through nemo-run (`nemo-qwenlong launch`, docs/launch.md).

    Site-specific fields (account, partition, qos, job_dir, container_image, container_mounts, env_vars,
    secret_env, srun_args, mem, constraint, judge.model_path) belong in a cluster file, conf/cluster/<site>.yaml."""

    executor: Literal["local", "slurm"] = field("local", "nemo-run executor")
    nodes: int = field(1, "nodes", ge=1, le=4096)
    gpus_per_node: int = field(8, "GPUs per node (0 for CPU-only local runs)", ge=0, le=16)
    gpu: Literal["h100", "h200"] = field(
        "h100", "GPU model (h100: 80 GB, h200: 141 GB); trainer and vLLM memory are checked against it (docs/plan.md)",
        informational="read only by the config's own memory check (RunConfig._check_colocation); Slurm is not "
        "asked for it: cluster.constraint is")
    account: str | None = field(None, "Slurm account (required for slurm)")
    partition: str | None = field(None, "Slurm partition (required for slurm)")
    qos: str | None = field(None, "Slurm QOS (sbatch --qos); null: the account's default")
    constraint: str | None = field(None, "Slurm node features (sbatch --constraint), e.g. 'h200'")
    mem: str | None = field("0", "memory per node (sbatch --mem); '0': all of it; null: the partition default")
    time: str = field("04:00:00", "Slurm wall time", pattern=r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")
    job_dir: str | None = field(None, "login-node folder on the shared filesystem where nemo-run writes the sbatch "
                                "scripts and logs (required for slurm)")
    container_image: str = field("nemo-qwenlong:latest", "container image (see Dockerfile)", min_length=1)
    container_mounts: list[str] = field([], "container mounts, 'host:container'")
    env_vars: dict[str, str] = field({}, "extra environment variables for every task (never API keys)")
    secret_env: list[str] = field([], "names of environment variables passed by name from the submitting shell "
                                  "into the container (pyxis --container-env); their values are never written")
    srun_args: list[str] = field([], "extra srun flags for every task, e.g. ['--mpi=pmix']")
    exclusive: bool = field(True, "request whole nodes")
    rdzv_port: int = field(29500, "torchrun rendezvous port on the first trainer node", ge=1024, le=65535)
    requeue_signal_lead_s: int = field(
        1200, "Slurm sends SIGUSR1 this long before the time limit (sbatch --signal); the loop finishes its step, "
        "checkpoints, exits 0 and the job requeues itself. Set above one RL step plus a checkpoint", ge=60, le=65535)
    max_requeues: int = field(20, "requeues after a preemption checkpoint before the job stops for good", ge=0)
    eval_port: int = field(8100, "port of the eval job's model server (vllm serve of --model)", ge=1024, le=65535)
    judge: ClusterJudgeConfig = section(ClusterJudgeConfig, "the judge job")

    @model_validator(mode="after")
    def _slurm_fields(self) -> "ClusterConfig":
        if self.executor == "slurm":
            missing = [k for k in ("account", "partition") if not getattr(self, k)]
            if missing:
                raise ValueError(f"cluster.executor='slurm' needs {', '.join('cluster.' + m for m in missing)}")
        bad_names = [n for n in self.secret_env if not _ENV_NAME.fullmatch(n)]
        if bad_names:
            raise ValueError(f"cluster.secret_env = {bad_names}: each entry is an environment variable name "
                             "(letters, digits, '_'), e.g. OPENAI_API_KEY; values never go into a config")
        j = self.judge
        if j.placement == "trainer_node" and not 1 <= j.gpus <= self.gpus_per_node:
            raise ValueError(f"cluster.judge.placement='trainer_node' shares cluster.judge.gpus={j.gpus} GPU(s) of the "
                             f"first trainer node, which has cluster.gpus_per_node={self.gpus_per_node}; accepted: "
                             f"cluster.judge.gpus <= {self.gpus_per_node} on a GPU node, or cluster.judge.placement="
                             "'own_node'")
        secret = [k for k in self.env_vars if is_secret_name(k)]
        if secret:
            raise ValueError(
                f"cluster.env_vars holds {secret}: configs are written into run directories and logs; "
                "pass secrets through the submitting shell's environment instead"
            )
        return self
