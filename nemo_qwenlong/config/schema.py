"""The whole run configuration: one class per section, every default defined exactly once here."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from nemo_qwenlong.config.base import Section, field, section
from nemo_qwenlong.config.operations import CheckpointConfig, ClusterConfig, LoggingConfig, WandbConfig
from nemo_qwenlong.config.pipeline import (
    CurriculumConfig,
    DataConfig,
    EvaluationConfig,
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
from nemo_qwenlong.planning.hardware import GPUS, Assumptions, geometry_of, known_positions
from nemo_qwenlong.planning.layout import colocation_problems
from nemo_qwenlong.planning.report import layout_for
from nemo_qwenlong.rollout.engine_layout import EngineShape, tp_problem

__all__ = [
    "RunConfig",
    "CheckpointConfig",
    "ClusterConfig",
    "CurriculumConfig",
    "DataConfig",
    "DynamicSamplingConfig",
    "EvaluationConfig",
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


PipelineStage = Literal["data", "sft", "rl", "export", "eval"]
PIPELINE_ORDER: tuple[str, ...] = ("data", "sft", "rl", "export", "eval")


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
    evaluation: EvaluationConfig = section(EvaluationConfig, "held-out evaluation at the end of `run`")
    pipeline: list[PipelineStage] = field(
        ["data", "rl", "export", "eval"],
        "stages `nemo-qwenlong run` runs, in this order: data (prepare/generate), sft (warm-up), rl (every "
        "curriculum stage), export (HF folder for vLLM), eval (held-out accuracy)", min_length=1,
    )

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
        self._check_context()
        self._check_pipeline()
        if self.evaluation.docmath_extractor == "judge" and self.reward.judge_when == "never":
            raise ValueError("evaluation.docmath_extractor='judge' asks reward.judge, but reward.judge_when='never' "
                             "(use docmath_extractor 'rule', or judge_when 'rule_fail'/'always')")
        p = self.parallelism
        model_parallel = p.tensor_parallel * p.pipeline_parallel * p.context_parallel
        world = self.cluster.nodes * self.cluster.gpus_per_node
        if self.cluster.gpus_per_node and world % model_parallel:
            raise ValueError(
                f"parallelism TP×PP×CP = {p.tensor_parallel}×{p.pipeline_parallel}×{p.context_parallel} = "
                f"{model_parallel} must divide cluster.nodes×cluster.gpus_per_node = {world}"
            )
        self._check_rollout_layout()
        self._check_colocation()
        return self

    def _check_context(self) -> None:
        """Every stage's input cap + output cap fits the positions the model is run with: model.yarn's
        factor × original, else a known model's max_position_embeddings (unknown models: checked by vLLM)."""
        m, yarn = self.model, self.model.yarn
        if yarn is not None:
            limit = int(yarn.factor * yarn.original_max_position_embeddings)
            where = f"model.yarn: {yarn.factor:g} × {yarn.original_max_position_embeddings}"
        else:
            limit = known_positions(m.source, m.path, m.geometry)
            where = "the model's max_position_embeddings, no model.yarn"
        if limit is None:
            return
        original = yarn.original_max_position_embeddings if yarn else 32768
        for i, s in enumerate(self.curriculum.stages):
            need = s.max_input_tokens + s.max_output_tokens
            if need > limit:
                raise ValueError(
                    f"curriculum.stages.{i} ({s.name}): max_input_tokens {s.max_input_tokens} + max_output_tokens "
                    f"{s.max_output_tokens} = {need} tokens exceed the model's {limit} positions ({where}); set "
                    f"model.yarn.factor >= {need / original:.2f} (factor × {original} >= {need}) or lower the "
                    "stage's caps")

    def _check_rollout_layout(self) -> None:
        """vLLM replicas: rollout.tensor_parallel divides the cluster's ranks and a node's, and splits the
        model's heads when the geometry is known without reading files (rollout.engine_layout)."""
        c, m = self.cluster, self.model
        if self.rollout.backend != "vllm":
            return
        g = geometry_of(m.source, m.path, m.tiny.model_dump(), m.geometry)
        shape = EngineShape(heads=g.heads if g else None, kv_heads=g.kv_heads if g else None,
                            ranks=c.nodes * c.gpus_per_node or None, ranks_per_node=c.gpus_per_node or None)
        problem = tp_problem(self.rollout.tensor_parallel, shape)
        if problem:
            raise ValueError(problem)

    def _check_colocation(self) -> None:
        """GPU runs with the colocated vLLM engine: trainer and engine fit one GPU together
        (planning.layout.colocation_problems; exact sizes only, docs/plan.md)."""
        c, p, r = self.cluster, self.parallelism, self.rollout
        if c.gpus_per_node == 0 or r.backend != "vllm" or p.dist_backend != "nccl":
            return
        m = self.model
        geometry = geometry_of(m.source, m.path, m.tiny.model_dump(), m.geometry)
        longest = max(self.curriculum.stages, key=lambda s: s.max_input_tokens + s.max_output_tokens)
        layout = layout_for(self, input_tokens=longest.max_input_tokens,
                            output_tokens=longest.max_output_tokens)
        problems = colocation_problems(geometry, layout, GPUS[c.gpu], Assumptions())  # geometry None: unknown model
        if problems:
            raise ValueError("trainer and rollout engine cannot share the GPUs: " + "; ".join(problems))

    def _check_pipeline(self) -> None:
        names = list(self.pipeline)
        if sorted(names, key=PIPELINE_ORDER.index) != names or len(set(names)) != len(names):
            raise ValueError(f"pipeline = {names}: stages must be unique and in the order {list(PIPELINE_ORDER)}")
        synthetic = self.data.synthetic
        if synthetic.kind == "tiny":
            n = len(self.curriculum.stages)
            for key in ("facts", "filler"):
                value = getattr(synthetic, key)
                if len(value) != n:
                    raise ValueError(f"data.synthetic.{key} has {len(value)} entries for {n} curriculum stages")
            if any(len(f) != 2 or not 0 <= f[0] <= f[1] for f in synthetic.filler):
                raise ValueError(f"data.synthetic.filler = {synthetic.filler}: each entry is [min, max] with 0 <= min <= max")
            if any(not 1 <= f <= 8 for f in synthetic.facts):
                raise ValueError(f"data.synthetic.facts = {synthetic.facts}: each is 1..8")
            return

    def runnable_problems(self) -> list[str]:
        """What `nemo-qwenlong run` refuses beyond a valid schema, read from the config alone: the data each
        pipeline stage reads, and settings `run` does not support yet. `config validate`, `plan`, `launch` and
        `run` all refuse these before anything starts (config.loader.check_runnable). What depends on the
        machine or the launch (CUDA, devices, cores, the installed vLLM, the model's files where the job runs)
        `run` checks when it starts (loops.checks)."""
        return self._data_problems() + self._unsupported()

    def _data_problems(self) -> list[str]:
        if self.data.synthetic.kind == "tiny":
            return []
        names, problems = list(self.pipeline), []
        if "rl" in names and not self.data.train_path:
            problems.append("pipeline has 'rl' but data.train_path is null (and data.synthetic.kind='none')")
        if "sft" in names and not self.sft.train_path:
            problems.append("pipeline has 'sft' but sft.train_path is null (the warm-up data is not released: "
                            "docs/run.md gives its format)")
        if "eval" in names and not (self.evaluation.heldout_path or self.data.val_path):
            problems.append("pipeline has 'eval' but evaluation.heldout_path and data.val_path are null")
        return problems

    def _unsupported(self) -> list[str]:
        problems = []
        if self.rl.kl_coef > 0:
            problems.append(f"rl.kl_coef={self.rl.kl_coef}: `run` holds no reference policy yet (the released DAPO "
                            "settings use 0); accepted: rl.kl_coef=0")
        for i, s in enumerate(self.curriculum.stages):
            on = [k for k, v in (("reset_optimizer", s.reset_optimizer), ("reset_lr_schedule", s.reset_lr_schedule))
                  if v]
            if on:
                problems.append(", ".join(f"curriculum.stages.{i}.{k}=true" for k in on) + ": per-stage optimiser/"
                                "schedule resets are not supported by `run` yet (the optimiser and schedule continue "
                                "across stages); accepted: false")
        return problems
