"""Schema sections for checkpoints, logging and the cluster."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from nemo_qwenlong.config.base import Section, field, section
from nemo_qwenlong.redact import is_secret_name


class CheckpointConfig(Section):
    """Checkpoints: Megatron torch_dist shards + sampler/ledger/RNG state, written atomically."""

    dir: str | None = field(None, "checkpoint folder; null means <run dir>/checkpoints")
    save_every_steps: int = field(5, "save every N RL/SFT steps", ge=1)
    keep_last: int = field(3, "checkpoints kept on disk (older ones are deleted)", ge=1)
    resume: str = field("auto", "'auto' (latest in dir), 'never', or a checkpoint folder", min_length=1)


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


class ClusterConfig(Section):
    """Where the job runs: locally, or on Slurm through nemo-run."""

    executor: Literal["local", "slurm"] = field("local", "nemo-run executor")
    nodes: int = field(1, "nodes", ge=1, le=4096)
    gpus_per_node: int = field(8, "GPUs per node (0 for CPU-only local runs)", ge=0, le=16)
    account: str | None = field(None, "Slurm account (required for slurm)")
    partition: str | None = field(None, "Slurm partition (required for slurm)")
    time: str = field("04:00:00", "Slurm wall time", pattern=r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")
    container_image: str = field("nemo-qwenlong:latest", "container image (see Dockerfile)", min_length=1)
    container_mounts: list[str] = field([], "container mounts, 'host:container'")
    env_vars: dict[str, str] = field({}, "extra environment variables for every task (never API keys)")
    exclusive: bool = field(True, "request whole nodes")

    @model_validator(mode="after")
    def _slurm_fields(self) -> "ClusterConfig":
        if self.executor == "slurm":
            missing = [k for k in ("account", "partition") if not getattr(self, k)]
            if missing:
                raise ValueError(f"cluster.executor='slurm' needs {', '.join('cluster.' + m for m in missing)}")
        secret = [k for k in self.env_vars if is_secret_name(k)]
        if secret:
            raise ValueError(
                f"cluster.env_vars holds {secret}: configs are written into run directories and logs; "
                "pass secrets through the submitting shell's environment instead"
            )
        return self
