"""Rollout engine replicas inside the trainer ranks (docs/rollouts.md, "Many ranks").

With W ranks and `rollout.tensor_parallel` = T the job holds R = W / T engine replicas: replica
r is ranks [r·T, (r+1)·T) (vLLM's `external_launcher` puts consecutive ranks in one TP group), and
every rank of a replica drives its own share of that replica's engine with the same inputs.

A generation call is collective: every rank passes all prompts (the sampler is replicated), replica
r generates the contiguous block `deal(len(prompts), R, r)`, and the blocks are gathered so every
rank returns every prompt's samples. Prompt j of the call keeps the seed it has on one engine
(`rollout.generator.prompt_seed(seed, j, n)`, the block's seed shifted by its start), so samples
never depend on R. Weight refit is local: each rank loads the full HF tensors its trainer ranks
gather into its own engine worker, and each replica checks agreement on the whole probe
(`merge_agreement` keeps the worst replica).

The math (`ReplicaLayout`, `deal`, `merge_blocks`, `merge_agreement`) is pure; `EngineReplicas`
talks to the other ranks only through the `comm` it is given (`loops.dist`: `all_gather`,
`broadcast`), so it has no process-group code of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from torch import Tensor

from nemo_qwenlong.rollout.engine_layout import EngineShape, tp_problem
from nemo_qwenlong.rollout.generator import RefitStats, Sample, SamplingSettings, in_prompt_order


@dataclass(frozen=True)
class ReplicaLayout:
    """Where this rank sits among R = world / tensor_parallel replicas of T consecutive ranks."""

    world: int
    rank: int
    tensor_parallel: int

    def __post_init__(self) -> None:
        problem = tp_problem(self.tensor_parallel, EngineShape(ranks=self.world, ranks_name="this launch"))
        if problem:
            raise ValueError(problem)
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is outside a world of {self.world}")

    @property
    def replicas(self) -> int:
        return self.world // self.tensor_parallel

    @property
    def replica(self) -> int:
        return self.rank // self.tensor_parallel

    @property
    def leader(self) -> bool:
        """The replica's first rank: it hands the replica's results to the gather."""
        return self.rank % self.tensor_parallel == 0

    def ranks_of(self, replica: int) -> list[int]:
        t = self.tensor_parallel
        return list(range(replica * t, (replica + 1) * t))


def deal(count: int, replicas: int, replica: int) -> tuple[int, int]:
    """[start, stop) of `replica`'s contiguous block of `count` prompts: blocks in replica order,
    the first `count % replicas` one longer (a replica may get none when count < replicas)."""
    if replicas < 1 or not 0 <= replica < replicas:
        raise ValueError(f"replica {replica} of {replicas}")
    base, extra = divmod(count, replicas)
    start = replica * base + min(replica, extra)
    return start, start + base + (replica < extra)


def merge_blocks(parts: Iterable[tuple[int, list[Any]] | None], count: int) -> list[Any]:
    """The gathered (start, results) blocks of every replica's leader (None from other ranks) as one
    list in prompt order; a gap or an overlap is a bug in the dealing and raises."""
    out: list[Any] = [None] * count
    seen = [False] * count
    for part in parts:
        if part is None:
            continue
        start, block = part
        for k, value in enumerate(block):
            if start + k >= count or seen[start + k]:
                raise RuntimeError(f"replica blocks overlap or overrun at prompt {start + k} of {count}")
            seen[start + k] = True
            out[start + k] = value
    missing = [j for j, ok in enumerate(seen) if not ok]
    if missing:
        raise RuntimeError(f"no replica returned prompts {missing[:10]} of {count}")
    return out


def merge_agreement(per_replica: Sequence[dict[str, float]]) -> dict[str, float]:
    """One agreement row from every replica's (`rollout.refit.agreement` metrics): the worst
    difference and the ratio farthest from 1 over replicas, so one replica that missed its refit
    stops the run; refit timings are the slowest replica's."""
    if not per_replica:
        raise ValueError("merge_agreement needs at least one replica's metrics")
    out = dict(per_replica[0])
    for key in ("logprob_abs_diff_mean", "logprob_abs_diff_max", "refit_seconds", "refit_buckets", "refit_mb",
                "refit_peak_extra_mb"):
        values = [m[key] for m in per_replica if key in m]
        if values:
            out[key] = max(values)
    ratios = [m["prob_ratio_mean"] for m in per_replica if "prob_ratio_mean" in m]
    if ratios:
        out["prob_ratio_mean"] = max(ratios, key=lambda r: abs(r - 1.0))
    return out


def replicated(engine: Any) -> bool:
    """True when every rank holds an engine replica (an `EngineReplicas`), so every rank takes part in
    every generation call and refits its own share."""
    return bool(getattr(engine, "replicated", False))


class Comm(Protocol):
    def all_gather(self, obj: Any) -> list[Any]: ...

    def broadcast(self, obj: Any) -> Any: ...


_STOP = ("stop", ())


class EngineReplicas:
    """R replicas of one engine over the world (see the module docstring); implements `Generator`.

    `generate_iter`, `generate` and `score` are collective: every rank calls them with the same
    arguments. Rank-0-only code (the eval stage's `eval generate`) drives them inside `lead()` while
    the other ranks `follow()`: each call on rank 0 is first broadcast, then run everywhere.
    `load_weights`, `sleep` and `wake_up` act on this rank's own engine (every rank refits itself)."""

    replicated = True

    def __init__(self, engine: Any, layout: ReplicaLayout, comm: Comm) -> None:
        self.local, self.layout, self.comm = engine, layout, comm
        self.replica_seconds: list[float] = []  # each replica's seconds in the last generation call
        self._leading = False

    @property
    def replicas(self) -> int:
        return self.layout.replicas

    # ---- collective calls ------------------------------------------------------------------------
    def generate_iter(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> Iterator[tuple[int, list[Sample]]]:
        """(prompt index, samples): this replica's block as it finishes, then the others' after the gather."""
        self._announce("generate_iter", (prompts, settings))
        if settings.seed is None and self.layout.tensor_parallel > 1:
            raise ValueError("unseeded sampling on a replica over several ranks: its ranks would draw different "
                             "tokens (each has its own generator); give SamplingSettings a seed")
        start, stop = deal(len(prompts), self.replicas, self.layout.replica)
        block = settings if settings.seed is None else replace(settings, seed=settings.seed + start * settings.n)
        mine: dict[int, list[Sample]] = {}
        t0 = time.perf_counter()
        if stop > start:  # every prompt runs to its end: the ranks of a replica must stay in step
            for i, samples in self.local.generate_iter(prompts[start:stop], block):
                mine[start + i] = samples
                yield start + i, samples
        seconds = time.perf_counter() - t0
        parts = self.comm.all_gather((start, [mine[j] for j in range(start, stop)], seconds)
                                     if self.layout.leader else None)
        self.replica_seconds = [p[2] for p in parts if p is not None]
        for other, block_samples, _ in (p for p in parts if p is not None and p[0] != start):
            for k, samples in enumerate(block_samples):
                yield other + k, samples

    def generate(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> list[list[Sample]]:
        return in_prompt_order(self.generate_iter(prompts, settings), len(prompts))

    def score(self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        self._announce("score", (prompts, continuations))
        start, stop = deal(len(prompts), self.replicas, self.layout.replica)
        mine = self.local.score(prompts[start:stop], continuations[start:stop]) if stop > start else []
        parts = self.comm.all_gather((start, mine) if self.layout.leader else None)
        return merge_blocks(parts, len(prompts))

    # ---- rank 0 leads, the others follow ---------------------------------------------------------
    def _announce(self, method: str, args: tuple) -> None:
        if self._leading:
            self.comm.broadcast((method, args))

    @contextmanager
    def lead(self) -> Iterator["EngineReplicas"]:
        """On rank 0: every collective call inside is first broadcast to the ranks in `follow()`."""
        self._leading = True
        try:
            yield self
        finally:
            self._leading = False
            self.comm.broadcast(_STOP)

    def follow(self) -> int:
        """On every other rank: run rank 0's announced calls until its `lead()` ends; returns their count."""
        calls = 0
        while True:
            method, args = self.comm.broadcast(None)
            if method == _STOP[0]:
                return calls
            result = getattr(self, method)(*args)
            if method == "generate_iter":
                for _ in result:
                    pass
            calls += 1

    # ---- this rank's own engine ------------------------------------------------------------------
    def load_weights(self, named_tensors: Iterable[tuple[str, Tensor]], *, bucket_bytes: int) -> RefitStats:
        return self.local.load_weights(named_tensors, bucket_bytes=bucket_bytes)

    def sleep(self) -> None:
        if hasattr(self.local, "sleep"):
            self.local.sleep()

    def wake_up(self) -> None:
        if hasattr(self.local, "wake_up"):
            self.local.wake_up()

    def shutdown(self) -> None:
        """vLLM's shutdown also destroys the default process group: only at the very end of a job."""
        self.local.shutdown()
