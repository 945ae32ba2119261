"""DAPO soft overlong punishment (qwenlong-l1-spec.md §3.4). Pure torch."""

from __future__ import annotations

import torch
from torch import Tensor


def overlong_penalty(lengths: Tensor, *, max_len: int, buffer: int, factor: float) -> Tensor:
    """r_len = clamp(−(L − (L_max − L_buf)) / L_buf · α, −α, 0), float32 `[N]`.

    Zero up to L_max − L_buf tokens, falling linearly to −α at L_max. Beyond L_max it stays at −α
    (DAPO's hard branch; unreachable when generation is capped at L_max, as in the released runs).
    `lengths` counts valid response tokens, EOS included.
    """
    if not 0 < buffer <= max_len:
        raise ValueError(f"overlong buffer must be in 1..max_len={max_len}, got {buffer}")
    if factor < 0:
        raise ValueError(f"overlong factor must be >= 0, got {factor}")
    expected = max_len - buffer
    over = (lengths.float() - expected).clamp(min=0.0)
    return torch.clamp(-over / buffer * factor, min=-factor, max=0.0)
