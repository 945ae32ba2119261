"""Warm-up SFT: response-token NLL over token-budgeted micro-batches, validation loss, checkpoints.

Step s takes rows [s·B, (s+1)·B) of the concatenation of per-epoch permutations (seeded by
(seed, epoch)), so the data a step sees depends only on s: a resumed run sees what an
uninterrupted one would. Rows are split over data-parallel ranks round-robin; the policy
normalises by the global token count. Written against the policy's small interface:
`sft_step(TokenRows)`, `compute_logprobs(TokenRows, temperature=1)`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nemo_qwenlong.algorithms.batch import TokenRows
from nemo_qwenlong.loops.preemption import Preempted


@dataclass
class SFTData:
    train: list[tuple[list[int], list[int]]]  # (prompt ids, response ids + EOS)
    val: list[tuple[list[int], list[int]]]
    dropped_too_long: int


def split_examples(encoded: Sequence[tuple[list[int], list[int]]], *, max_seq_len: int, val_fraction: float,
                   seed: int, val: Sequence[tuple[list[int], list[int]]] | None = None) -> SFTData:
    """Drop rows longer than max_seq_len (counted), and hold out a seeded validation share."""
    fits = [e for e in encoded if len(e[0]) + len(e[1]) <= max_seq_len]
    dropped = len(encoded) - len(fits)
    if val is not None:
        return SFTData(fits, [e for e in val if len(e[0]) + len(e[1]) <= max_seq_len], dropped)
    order = list(range(len(fits)))
    random.Random(f"{seed}-sft-val").shuffle(order)
    n_val = min(len(fits) - 1, math.ceil(val_fraction * len(fits))) if val_fraction > 0 else 0
    held = set(order[:n_val])
    return SFTData([e for i, e in enumerate(fits) if i not in held], [fits[i] for i in sorted(held)], dropped)


def total_steps(n_train: int, sft: Any) -> int:
    per_epoch = max(1, n_train // sft.global_batch_size)
    return sft.max_steps if sft.max_steps is not None else per_epoch * sft.epochs


def step_rows(step: int, n: int, batch: int, seed: int) -> list[int]:
    """Indices of step `step`'s rows (0-based step), epoch permutations laid end to end (drop-last)."""
    per_epoch = max(1, n // batch)
    epoch, offset = divmod(step, per_epoch)
    perm = list(range(n))
    random.Random(f"{seed}-sft-epoch-{epoch}").shuffle(perm)
    return perm[offset * batch:(offset + 1) * batch] if n >= batch else perm


def rows_of(examples: Sequence[tuple[list[int], list[int]]]) -> TokenRows:
    return TokenRows.from_lists([p for p, _ in examples], [r for _, r in examples])


def validation_loss(policy: Any, val: Sequence[tuple[list[int], list[int]]]) -> float:
    """Mean response-token NLL on the validation rows (every rank scores all of them)."""
    rows = rows_of(val)
    lp = policy.compute_logprobs(rows, temperature=1.0)
    return float(-(lp * rows.response_mask).sum() / rows.response_mask.sum().clamp(min=1))


def run_sft(policy: Any, data: SFTData, sft: Any, *, seed: int, start_step: int, dp_rank: int, dp_size: int,
            log_row: Callable[[dict], None], save: Callable[[int], None], should_stop: Callable[[], bool],
            save_every: int, progress: Any = None) -> int:
    """Steps start_step+1 .. total; returns the last step. `save(step)` checkpoints; when `should_stop()`
    (preemption) turns true, the step in hand finishes, is saved, and `Preempted` is raised."""
    steps = total_steps(len(data.train), sft)
    step = start_step
    while step < steps:
        t0 = time.perf_counter()
        picked = [data.train[i] for i in step_rows(step, len(data.train), sft.global_batch_size, seed)]
        mine = picked[dp_rank::dp_size]
        m = policy.sft_step(rows_of(mine))
        step += 1
        row = {"phase": "sft", "stage": "sft", "step": step, "loss": m["loss"], "lr": m.get("lr"),
               "grad_norm": m.get("grad_norm"), "tokens": sum(len(r) for _, r in picked),
               "step_s": time.perf_counter() - t0}
        if data.val and (step % sft.val_every_steps == 0 or step == steps):
            row["val_loss"] = validation_loss(policy, data.val)
        log_row(row)
        if progress is not None:
            progress(step, steps, row)
        stop = should_stop()
        if stop or step % save_every == 0 or step == steps:
            save(step)
        if stop:
            raise Preempted(f"SFT step {step}")
    return step
