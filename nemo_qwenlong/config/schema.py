"""The whole run configuration: one class per section, every default defined exactly once here."""

from __future__ import annotations

from pydantic import model_validator

from nemo_qwenlong.config.base import Section, field, section
from nemo_qwenlong.config.operations import CheckpointConfig, ClusterConfig, LoggingConfig, WandbConfig
from nemo_qwenlong.config.pipeline import (
    CurriculumConfig,
    DataConfig,
    JudgeConfig,
    RetrospectiveConfig,
    RewardConfig,
    RolloutConfig,
    StageConfig,
)
from nemo_qwenlong.config.training import (
    DynamicSamplingConfig,
    ModelConfig,
    OptimConfig,
    OverlongConfig,
    ParallelismConfig,
    RLConfig,
    SFTConfig,
    TinyArch,
    YarnConfig,
)

__all__ = [
    "RunConfig",
    "CheckpointConfig",
    "ClusterConfig",
    "CurriculumConfig",
    "DataConfig",
    "DynamicSamplingConfig",
    "JudgeConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "OverlongConfig",
    "ParallelismConfig",
    "RLConfig",
    "RetrospectiveConfig",
    "RewardConfig",
    "RolloutConfig",
    "SFTConfig",
    "StageConfig",
    "TinyArch",
    "WandbConfig",
    "YarnConfig",
]


class RunConfig(Section):
    """A run: which model, how it is laid out, the SFT/RL settings, data, checkpoints, logging, cluster."""

    name: str = field("qwenlong", "run name (run dirs are <runs_dir>/<name>-<timestamp>)", pattern=r"^[A-Za-z0-9._-]+$")
    seed: int = field(1, "global seed (data order, sampling, init)", ge=0)
    runs_dir: str = field("runs", "parent folder of run directories", min_length=1)
    model: ModelConfig = section(ModelConfig, "policy model")
    parallelism: ParallelismConfig = section(ParallelismConfig, "Megatron parallel layout")
    sft: SFTConfig = section(SFTConfig, "warm-up SFT")
    rl: RLConfig = section(RLConfig, "GRPO/DAPO algorithm")
    rollout: RolloutConfig = section(RolloutConfig, "rollout engine and sampling")
    reward: RewardConfig = section(RewardConfig, "hybrid reward and judge")
    curriculum: CurriculumConfig = section(CurriculumConfig, "curriculum stages")
    data: DataConfig = section(DataConfig, "datasets")
    checkpoint: CheckpointConfig = section(CheckpointConfig, "checkpoints and resume")
    logging: LoggingConfig = section(LoggingConfig, "logs and metrics")
    cluster: ClusterConfig = section(ClusterConfig, "where it runs")

    @model_validator(mode="after")
    def _cross_section(self) -> "RunConfig":
        if self.rl.overlong.enable and self.rl.overlong.buffer >= self.rollout.max_new_tokens:
            raise ValueError(
                f"rl.overlong.buffer={self.rl.overlong.buffer} must be below "
                f"rollout.max_new_tokens={self.rollout.max_new_tokens}"
            )
        for i, stage in enumerate(self.curriculum.stages):
            if stage.max_output_tokens > self.rollout.max_new_tokens:
                raise ValueError(
                    f"curriculum.stages.{i}.max_output_tokens={stage.max_output_tokens} exceeds "
                    f"rollout.max_new_tokens={self.rollout.max_new_tokens}"
                )
        p = self.parallelism
        model_parallel = p.tensor_parallel * p.pipeline_parallel * p.context_parallel
        world = self.cluster.nodes * self.cluster.gpus_per_node
        if self.cluster.gpus_per_node and world % model_parallel:
            raise ValueError(
                f"parallelism TP×PP×CP = {p.tensor_parallel}×{p.pipeline_parallel}×{p.context_parallel} = "
                f"{model_parallel} must divide cluster.nodes×cluster.gpus_per_node = {world}"
            )
        return self
