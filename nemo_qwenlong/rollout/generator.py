"""The generation interface every rollout backend implements (vLLM engine, transformers reference).

Token ids in, token ids + per-token log-probs out. `Sample.logprobs` are the log-probs of the
sampled tokens under the distribution actually sampled from (temperature, top-k, top-p applied:
vLLM's "processed" log-probs); with temperature 0 they are the raw model log-probs. `score`
returns raw (temperature 1) log-probs of given continuations from one prefill; the trainer–engine
agreement check compares those with the trainer's (rollout.refit).

Seeds: sample j of the prompt at position i of a call is seeded `seed + i·n + j` (`sample_seed`), so
every sample of a call has its own seed, and a prompt's samples depend only on (seed, its position,
n), never on which other prompts share the call or how a batch is split between engines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 16
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # run to max_tokens unless a stop token/string ends it (benchmarks)

    def __post_init__(self) -> None:
        checks = {"n": self.n >= 1, "temperature": self.temperature >= 0, "top_p": 0 < self.top_p <= 1,
                  "top_k": self.top_k == -1 or self.top_k >= 1, "max_tokens": self.max_tokens >= 1}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"SamplingSettings.{name}={getattr(self, name)!r} is out of range "
                                 "(n>=1, temperature>=0, 0<top_p<=1, top_k=-1 or >=1, max_tokens>=1)")

    @classmethod
    def for_training(cls, rollout, *, n: int, seed: int | None, stop_token_ids: Sequence[int] = ()) -> "SamplingSettings":  # noqa: ANN001
        """From a RolloutConfig: the training sampling settings (spec §4.5)."""
        return cls(n=n, temperature=rollout.temperature, top_p=rollout.top_p, top_k=rollout.top_k,
                   max_tokens=rollout.max_new_tokens, stop_token_ids=tuple(stop_token_ids), seed=seed)


def prompt_seed(seed: int, position: int, n: int) -> int:
    """Seed of the prompt at `position` of a generation call with `n` samples per prompt: its samples
    take prompt_seed + 0 .. n-1 (vLLM seeds sample j of a request `seed + j`), so no two samples of
    a call share a seed (`seed + position` would give prompt i sample j and prompt i+1 sample j-1 one)."""
    return seed + position * n


def sample_seed(seed: int, position: int, n: int, sample: int) -> int:
    """Seed of sample `sample` of the prompt at `position`: seed + position·n + sample."""
    return prompt_seed(seed, position, n) + sample


@dataclass(frozen=True)
class Sample:
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: str  # "stop" (EOS, stop token or string) or "length"

    @property
    def truncated(self) -> bool:
        """Stopped at max_tokens (the overlong shaping and truncation metrics use this)."""
        return self.finish_reason == "length"


@dataclass(frozen=True)
class RefitStats:
    tensors: int
    buckets: int
    bytes: int
    seconds: float


class Generator(Protocol):
    def generate_iter(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> Iterator[tuple[int, list[Sample]]]:
        """(prompt index, its n samples) as each prompt's samples finish (long tails arrive last)."""

    def generate(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> list[list[Sample]]:
        """All samples, in prompt order."""

    def score(self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        """Raw log-probs of each continuation's tokens after its prompt."""

    def load_weights(self, named_tensors: Iterable[tuple[str, Tensor]], *, bucket_bytes: int) -> RefitStats:
        """Replace the weights in place from HF-named tensors, in buckets of at most `bucket_bytes`."""


def in_prompt_order(results: Iterable[tuple[int, list[Sample]]], count: int) -> list[list[Sample]]:
    out: list[list[Sample] | None] = [None] * count
    for index, samples in results:
        out[index] = samples
    missing = [i for i, s in enumerate(out) if s is None]
    if missing:
        raise RuntimeError(f"generation returned no samples for prompts {missing[:10]}")
    return out  # type: ignore[return-value]


def to_rollout_batch(prompts: Sequence[Sequence[int]], samples: Sequence[Sequence[Sample]],
                     item_ids: Sequence[str], *, first_group_id: int = 0):
    """Rows of the batch contract, one per sample, each prompt's samples contiguous as one group;
    `truncated` from the finish reason; rewards/correct zero until the reward fills them."""
    from nemo_qwenlong.algorithms.batch import RolloutBatch, pad_sequences

    rows = [(g, p, s) for g, (p, group) in enumerate(zip(prompts, samples)) for s in group]
    prompt_ids, _ = pad_sequences([p for _, p, _ in rows])
    response_ids, response_mask = pad_sequences([s.token_ids for _, _, s in rows])
    n = len(rows)
    return RolloutBatch(
        group_ids=torch.tensor([first_group_id + g for g, _, _ in rows], dtype=torch.int64),
        sample_ids=torch.arange(n, dtype=torch.int64), prompt_ids=prompt_ids,
        prompt_lengths=torch.tensor([len(p) for _, p, _ in rows], dtype=torch.int64),
        response_ids=response_ids, response_mask=response_mask,
        truncated=torch.tensor([s.truncated for _, _, s in rows], dtype=torch.bool),
        rewards=torch.zeros(n), correct=torch.zeros(n, dtype=torch.bool),
        item_ids=tuple(item_ids[g] for g, _, _ in rows),
    )
