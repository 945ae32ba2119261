"""Schema sections for rollouts, rewards, the curriculum and the data.

Defaults: the released QwenLong-L1 settings (qwenlong-l1-spec.md §3, §4.5, §5). The curriculum and
the retrospective rule are only partly public (spec §5, §11.3-4): our choices are marked "choice".
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from nemo_qwenlong.config.base import Section, field, section

NOT_YET = "not supported by `run` yet: true is refused by every command (RunConfig.runnable_problems)"


class RolloutConfig(Section):
    """Sampling settings and the rollout engine (vLLM colocated with the trainer)."""

    backend: Literal["vllm", "hf"] = field("vllm", "generation engine (hf: transformers reference, slow)")
    temperature: float = field(0.7, "training sampling temperature", ge=0, le=10)
    top_p: float = field(0.95, "nucleus sampling mass", gt=0, le=1)
    top_k: int = field(-1, "top-k sampling; -1 disables", ge=-1)
    max_new_tokens: int = field(10000, "output cap L_max (also the overlong shaping reference)", ge=1)
    val_temperature: float = field(0.7, "validation sampling temperature", ge=0, le=10)
    val_top_p: float = field(0.95, "validation nucleus sampling mass", gt=0, le=1)
    val_samples: int = field(1, "samples per validation item", ge=1, le=64)
    tensor_parallel: int = field(4, "vLLM tensor-parallel size", ge=1, le=64)
    gpu_memory_utilization: float = field(0.5, "share of GPU memory vLLM may take", gt=0, le=1)
    enable_prefix_caching: bool = field(True, "reuse the KV cache of the shared prompt across the G samples")
    enable_chunked_prefill: bool = field(True, "chunk long prefills")
    max_num_batched_tokens: int = field(10000, "vLLM scheduler token budget per step", ge=16)
    enforce_eager: bool = field(False, "disable CUDA graphs (always true on CPU)")
    refit_bucket_mb: int = field(512, "bucket size when streaming trainer weights into the engine", ge=1)
    logprob_probe_size: int = field(4, "sequences used for the trainer-engine log-prob check per refit", ge=0)
    logprob_max_abs_diff: float | None = field(
        None, "stop when the mean |engine - trainer| token log-prob difference exceeds this; null only logs", gt=0
    )


class JudgeConfig(Section):
    """LLM answer-equivalence judge over an OpenAI-compatible API (spec §3.2)."""

    base_url: str = field("http://127.0.0.1:23547/v1", "OpenAI-compatible endpoint of the judge server")
    model: str = field("Qwen/Qwen2.5-1.5B-Instruct", "served model name of the judge")
    api_key_env: str = field("VERIFIER_API_KEY", "environment variable holding the API key ('EMPTY' if unset)")
    temperature: float = field(0.0, "judge sampling temperature", ge=0, le=2)
    max_tokens: int = field(512, "judge reply cap", ge=8)
    timeout_s: float = field(60.0, "per-request timeout", gt=0)
    max_retries: int = field(5, "attempts on 429/5xx/connection errors", ge=1, le=50)
    backoff_initial_s: float = field(1.0, "first retry delay (doubles each retry)", gt=0)
    backoff_max_s: float = field(64.0, "largest retry delay", gt=0)
    concurrency: int = field(16, "requests in flight at once (released code: 1)", ge=1, le=4096)
    cache_path: str | None = field("judge_cache.sqlite", "SQLite verdict cache (relative: inside the run dir)")
    max_prediction_chars: int = field(2000, "prediction length cap before it enters the prompt", ge=16)
    max_failure_rate: float = field(0.5, "stop the run when more of a step's judge calls fail", ge=0, le=1)


class RewardConfig(Section):
    """Hybrid reward: rule match, then the judge (spec §3)."""

    protocol: Literal["strict", "qwenlong"] = field(
        "strict", "strict: our corrected scorer (last answer phrase in any case, no empty matches, hardened judge "
        "prompt); qwenlong: the released training reward, quirks included (docs/eval.md)"
    )
    require_think: bool = field(True, "no '</think>' scores 0 (training); false falls back to the whole text (eval)")
    judge_when: Literal["rule_fail", "always", "never"] = field(
        "rule_fail", "ask the judge only when the rule says 0 (training), for every item (eval), or never"
    )
    docmath_decimals: int = field(3, "DocMath rounding digits (released training: 3, eval: 2)", ge=0, le=10)
    judge: JudgeConfig = section(JudgeConfig, "LLM judge")


class RetrospectiveConfig(Section):
    """Difficulty-aware retrospective sampling of earlier stages' hard items (choice: spec §11.4).

    Difficulty = 1 / mean answer reward (spec §5, Eq. 10) over an item's most recent `recent_window`
    rollout rewards (choice: the policy's current skill, not its lifetime average). An item with no
    correct answer in that window is "never solved": its group would be all-wrong, which dynamic
    sampling drops (spec §4.4), so by default it gets a low weight (`never_solved`, choice).
    """

    share: float = field(0.0, "fraction of each batch drawn from earlier stages' hard items", ge=0, le=1)
    selection: Literal["threshold", "top_k", "proportional"] = field(
        "proportional", "hard items: difficulty >= threshold, the top_k hardest, or sampled with p ∝ difficulty"
    )
    threshold: float = field(2.0, "threshold selection: minimum difficulty (1/mean reward)", ge=1)
    top_k: int = field(256, "top_k selection: how many of the hardest items (ties in random order)", ge=1)
    recent_window: int | None = field(
        8, "difficulty from each item's last N rollout rewards (one group of n=8; choice); null: all", ge=1
    )
    never_solved: Literal["skip", "low", "cap"] = field(
        "low", "items with no correct reward in the window: skip (never carried), low (difficulty "
        "never_solved_difficulty: carried rarely, still re-measured), cap (max_difficulty, the hardest)",
    )
    never_solved_difficulty: float = field(
        0.1, "never_solved=low: their difficulty, below any solvable item's (>= 1) (choice)", gt=0, le=1
    )
    max_difficulty: float = field(
        100.0, "cap on 1/mean reward; never_solved=cap gives never-solved items this (1/0 is undefined)", ge=1
    )
    drop_solved: bool = field(True, "never carry items whose recent mean reward is 1 (choice)")

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: object) -> object:
        if isinstance(data, dict) and "zero_reward_difficulty" in data:
            raise ValueError(
                "retrospective.zero_reward_difficulty was replaced: set never_solved (skip/low/cap) for "
                "never-solved items and max_difficulty for the cap (never_solved: cap is the old rule)"
            )
        return data


class StageConfig(Section):
    """One curriculum phase: the input-length band it trains on and how long."""

    name: str = field("stage", "label used in logs and checkpoint names", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    min_input_tokens: int = field(0, "items must be longer than this (exclusive; the previous stage's cap)", ge=0)
    max_input_tokens: int = field(20000, "input cap L_k, prompt tokens with the chat template", ge=1)
    max_output_tokens: int = field(10000, "output cap in this stage", ge=1)
    steps: int | None = field(None, "RL steps in this stage (exactly one of steps/epochs)", ge=1)
    epochs: float | None = field(
        None, "passes over the stage's items; the stage ends when their batches run out (a step draws 1 to "
        "max_rounds), at most the planned steps (docs/data.md) (exactly one of steps/epochs)", gt=0
    )
    reset_lr_schedule: bool = field(False, "restart warm-up/schedule at the stage start (choice)",
                                    informational=NOT_YET)
    reset_optimizer: bool = field(False, "drop Adam moments at the stage start (choice)", informational=NOT_YET)
    retrospective: RetrospectiveConfig = section(RetrospectiveConfig, "retrospective sampling")

    @model_validator(mode="after")
    def _one_length(self) -> "StageConfig":
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(
                f"curriculum stage '{self.name}': set exactly one of steps/epochs "
                f"(got steps={self.steps}, epochs={self.epochs})"
            )
        if self.min_input_tokens >= self.max_input_tokens:
            raise ValueError(
                f"curriculum stage '{self.name}': min_input_tokens={self.min_input_tokens} must be below "
                f"max_input_tokens={self.max_input_tokens}"
            )
        return self


def _paper_stages() -> list[StageConfig]:
    # Phase I <=20K, phase II 20K-60K with retrospective items (spec §5). Step counts are a choice:
    # the released demo ran ~120 steps single-stage at 60K (spec §4.4).
    return [
        StageConfig(name="stage1-20k", max_input_tokens=20000, steps=60),
        StageConfig(
            name="stage2-60k",
            min_input_tokens=20000,
            max_input_tokens=60000,
            steps=60,
            retrospective=RetrospectiveConfig(share=0.25),
        ),
    ]


class TaskBalanceConfig(Section):
    """Task-balanced sampling (QwenLong-L1.5; docs/data.md "Task-balanced sampling"): each generation batch
    holds an equal (or weighted) share of every task in the stage's band. Off: the QwenLong-L1 sampler."""

    enabled: bool = field(False, "split each batch evenly among the tasks (off: QwenLong-L1's sampler, unchanged)")
    key: Literal["kind", "source"] = field(
        "kind", "what a task is: kind (the reward route: qa, math, choice) or source (data_source without the "
        "released length-bucket suffix, e.g. docmath, musique, long_toc_choices)"
    )
    weights: dict[str, float] = field(
        {}, "relative weight per task name (a task not named weighs 1); names must be tasks of the data"
    )

    @model_validator(mode="after")
    def _positive(self) -> "TaskBalanceConfig":
        bad = {t: w for t, w in self.weights.items() if not w > 0}
        if bad:
            raise ValueError(f"curriculum.task_balance.weights={bad}: a weight must be > 0")
        kinds = ("qa", "math", "choice")
        unknown = sorted(t for t in self.weights if t not in kinds)
        if self.key == "kind" and unknown:
            raise ValueError(f"curriculum.task_balance.weights names {unknown}: with key=kind the tasks are "
                             f"{', '.join(kinds)}")
        return self


class CurriculumConfig(Section):
    """Progressive context scaling: ordered stages with increasing input caps (spec §5)."""

    stages: list[StageConfig] = Field(
        default_factory=_paper_stages, description="stages in training order (default: the paper's two)", min_length=1
    )
    drop_last: bool = field(
        True, "a batch never spans two passes over a stage's items: drop each pass's leftover that cannot fill a "
        "batch (the released run: 30 epochs over generation batches of 384 with drop_last); false: a short batch"
    )
    task_balance: TaskBalanceConfig = section(TaskBalanceConfig, "task-balanced sampling (QwenLong-L1.5; off by default)")

    @model_validator(mode="after")
    def _ordered(self) -> "CurriculumConfig":
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"curriculum.stages names must be unique (got {names})")
        if self.stages[0].retrospective.share > 0:
            raise ValueError(
                f"curriculum.stages.0.retrospective.share={self.stages[0].retrospective.share}: "
                "the first stage has no earlier stage to draw from (use 0)"
            )
        for i, (prev, cur) in enumerate(zip(self.stages, self.stages[1:]), start=1):
            if cur.max_input_tokens <= prev.max_input_tokens:
                raise ValueError(
                    f"curriculum.stages.{i}.max_input_tokens={cur.max_input_tokens} must exceed the previous "
                    f"stage's {prev.max_input_tokens}"
                )
        return self


class SyntheticDataConfig(Section):
    """The `data` stage's generator for runs without a dataset (the tiny CPU default, `data.tiny_task`)."""

    kind: Literal["none", "tiny"] = field("none", "none: use data.train_path; tiny: generate the tiny QA task")
    train_per_stage: int = field(512, "training items generated per curriculum stage", ge=1, le=1_000_000)
    heldout_per_stage: int = field(64, "held-out evaluation items per stage (unseen documents and questions)", ge=1)
    val_per_stage: int = field(16, "validation items per stage (RL validation accuracy)", ge=1)
    sft_items: int = field(2000, "SFT warm-up items (correct answers in the released format)", ge=1)
    facts: list[int] = field([2, 3], "facts per document in each stage (the rest are distractors)")
    filler: list[list[int]] = field([[1, 3], [6, 12]], "filler sentences [min, max] per document in each stage")
    choice_every: int = field(
        0, "tiny: every k-th training/validation/SFT item asks the question as multiple choice, a second task for "
        "curriculum.task_balance (0: QA only, the default task; held-out items stay QA)", ge=0
    )


class DataConfig(Section):
    """Training and validation data."""

    train_path: str | None = field(None, "training set (DocQA-RL-1.6K parquet or JSONL)")
    val_path: str | None = field(None, "validation set, same layouts")
    format: Literal["docqa_parquet", "jsonl"] = field("docqa_parquet", "file layout")
    prompt_template: Literal["qwenlong-l1", "qwenlong-l1.5"] = field(
        "qwenlong-l1", "template of the prompts this project builds (jsonl rows, the tiny task); DocQA parquet rows "
        "keep theirs. The L1.5 README's template is the L1 one character for character (docs/data.md)"
    )
    skip_invalid: bool = field(False, "skip bad rows and report the count (default: fail with every bad row)")
    synthetic: SyntheticDataConfig = section(SyntheticDataConfig, "generated data (tiny CPU default)")


class EvaluationConfig(Section):
    """The run's `eval` stage: the DocQA evaluation (docs/eval.md) of the SFT checkpoint and of the final
    policy, on the held-out set or on `benchmarks` (generation with the run's engine, scoring by
    `eval.score`: the released `qwenlong` protocol and `strict` beside it)."""

    heldout_path: str | None = field(None, "held-out set (same layouts as data.train_path); the tiny task makes its own")
    max_items: int | None = field(None, "score at most this many held-out items (null: all)", ge=1)
    temperature: float = field(0.0, "sampling temperature (0: greedy, the released eval)", ge=0, le=10)
    max_new_tokens: int | None = field(None, "output cap; null: rollout.max_new_tokens", ge=1)
    compare_sft: bool = field(True, "also score the SFT checkpoint, so the summary shows what RL added")
    benchmarks: str | None = field(None, "null: the held-out set; else `eval generate --benchmarks` (e.g. "
                                   "docmath,frames,2wikimqa,hotpotqa,musique,narrativeqa,qasper)")
    data_dir: str | None = field(None, "the released eval data folder, for `benchmarks` (eval generate --data-dir)")
    top_p: float = field(1.0, "nucleus sampling (the released eval: 0.95 at temperature 0.7)", gt=0, le=1)
    samples: int = field(1, "responses per item (avg@k)", ge=1)
    max_input_tokens: int = field(120_000, "middle-truncate longer prompts (the released cap)", ge=2)
    docmath_extractor: Literal["rule", "judge"] = field(
        "rule", "how docmath_official finds the final answer: rule (the phrase after the last 'the answer is', "
        "as written) or judge (DocMath-Eval's extraction prompt asked of reward.judge; needs a judge)")
