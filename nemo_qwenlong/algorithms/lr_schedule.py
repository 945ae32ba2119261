"""Learning rate per optimiser step: linear warm-up, then constant or cosine decay to `min_lr`. Pure."""

from __future__ import annotations

import math


def learning_rate(step: int, *, lr: float, min_lr: float = 0.0, warmup_steps: int = 0,
                  schedule: str = "constant", total_steps: int | None = None) -> float:
    """LR for optimiser step `step` (0-based): (step + 1)/warmup·lr during warm-up, then the schedule."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        if not total_steps or total_steps <= warmup_steps:
            raise ValueError(f"cosine schedule needs total_steps > warmup_steps={warmup_steps}, got {total_steps}")
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}; accepted: constant, cosine")
