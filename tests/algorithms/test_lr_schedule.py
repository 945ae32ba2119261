"""Warm-up then constant or cosine learning rate."""

from __future__ import annotations

import math

import pytest

from nemo_qwenlong.algorithms.lr_schedule import learning_rate


def test_warmup_then_constant() -> None:
    lrs = [learning_rate(s, lr=1.0, warmup_steps=4) for s in range(6)]
    assert lrs == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_reaches_min_lr_and_stays() -> None:
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=2, schedule="cosine", total_steps=12)
    assert learning_rate(2, **kw) == pytest.approx(1.0)
    assert learning_rate(7, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(12, **kw) == pytest.approx(0.1) and learning_rate(50, **kw) == pytest.approx(0.1)


def test_bad_schedule_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="total_steps > warmup_steps=2"):
        learning_rate(3, lr=1.0, warmup_steps=2, schedule="cosine")
    with pytest.raises(ValueError, match="accepted: constant, cosine"):
        learning_rate(0, lr=1.0, schedule="linear")
