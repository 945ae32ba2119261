"""AEPO, QwenLong-L1.5's adaptive entropy-controlled policy optimisation (arXiv 2512.12967). Pure torch.

While the policy entropy is too high, an update uses only the samples with a positive advantage and a
positive reward (no negative gradient, so the entropy falls); otherwise it uses every sample. Two rules
decide when to mask (docs/algorithms.md#aepo):

    hysteresis (paper):          start masking when H > high, stop when H < low, else keep the last state
    band (released snippet):     mask exactly while low < H < high

H is the token-mean entropy of the step's training batch under the policy before its update, over every
sample (as the released trainer's old-log-prob pass measures it), or with `rl.aepo.entropy:
previous_update` the previous step's update entropy (over the samples that update used). A masked sample keeps its row with an
empty response mask, so it adds no token to any rank's global count (docs/algorithms.md#aepo).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

from nemo_qwenlong.algorithms.batch import RolloutBatch

Mode = Literal["hysteresis", "band"]


def next_masking(mode: Mode, masking: bool, entropy: float | None, *, low: float, high: float) -> bool:
    """Whether this step masks, from the last step's state `masking` and this batch's entropy (None: unknown,
    the state stays)."""
    if entropy is None:
        return masking
    if mode == "band":
        return low < entropy < high
    if mode == "hysteresis":
        return entropy > high or (masking and entropy >= low)
    raise ValueError(f"unknown rl.aepo.mode {mode!r}; accepted: hysteresis, band")


def kept_rows(advantages: Tensor, rewards: Tensor) -> Tensor:
    """[N] bool: rows with Â > 0 and R > 0 (the released snippet's positive samples)."""
    return (advantages > 0) & (rewards > 0)


def mask_rows(batch: RolloutBatch, keep: Tensor) -> RolloutBatch:
    """`batch` with the response mask of every row not in `keep` ([N] bool) emptied: those rows add no
    token or sequence to a global count and no loss or gradient, yet stay where the DP deal put them."""
    return batch.replace(response_mask=batch.response_mask & keep.unsqueeze(1))


@dataclass
class AepoState:
    """What AEPO carries from one RL step to the next (hysteresis needs the last state); saved with each RL
    checkpoint."""

    masking: bool = False
    entropy: float | None = None  # the last entropy the rule read; None before the first
    last_update: float | None = None  # the last update's entropy (what `previous_update` reads next step)

    def state_dict(self) -> dict[str, Any]:
        return {"masking": self.masking, "entropy": self.entropy, "last_update": self.last_update}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masking, self.entropy = bool(state["masking"]), state["entropy"]
        self.last_update = state.get("last_update")


def metrics(state: AepoState, keep: Tensor | None, rows: int) -> dict[str, float]:
    """The per-step log: `aepo/masking` (0/1), `aepo/entropy` (the value the rule read; NaN before the
    first), `aepo/kept` (samples the update used: all when not masking) and `aepo/kept_frac`."""
    kept = rows if keep is None else int(keep.sum())
    return {"aepo/masking": float(state.masking),
            "aepo/entropy": float("nan") if state.entropy is None else float(state.entropy),
            "aepo/kept": float(kept), "aepo/kept_frac": kept / rows if rows else 0.0}

