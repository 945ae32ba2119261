"""DAPO soft overlong punishment (spec §3.4)."""

from __future__ import annotations

import pytest
import torch

from nemo_qwenlong.algorithms.shaping import overlong_penalty


def test_small_hand_values() -> None:
    # L_max 10, buffer 4 → ramp starts after 6 tokens: −(L−6)/4, clamped at −1
    # L = 5, 6, 8, 10, 12 → 0, 0, −0.5, −1.0, −1.0
    out = overlong_penalty(torch.tensor([5, 6, 8, 10, 12]), max_len=10, buffer=4, factor=1.0)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, -0.5, -1.0, -1.0]))


def test_released_settings() -> None:
    # spec §3.4: 0 up to 9000 tokens, −0.5 at 9500, −1.0 at 10000 (factor 1)
    out = overlong_penalty(torch.tensor([1, 9000, 9500, 10000]), max_len=10000, buffer=1000, factor=1.0)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, -0.5, -1.0]))


def test_factor_scales_penalty() -> None:
    out = overlong_penalty(torch.tensor([9500]), max_len=10000, buffer=1000, factor=0.5)
    torch.testing.assert_close(out, torch.tensor([-0.25]))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="buffer must be in 1..max_len=10"):
        overlong_penalty(torch.tensor([1]), max_len=10, buffer=0, factor=1.0)
    with pytest.raises(ValueError, match="factor must be >= 0"):
        overlong_penalty(torch.tensor([1]), max_len=10, buffer=2, factor=-1.0)
