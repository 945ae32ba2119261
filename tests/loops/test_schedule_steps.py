"""The LR schedule's length is counted in optimiser steps (loops/backend.py `schedule_steps`, what
`build_policy` hands the optimiser), not RL steps: the schedule advances once per optimiser step and
an RL step makes `updates_per_rollout` of them. Driven through the real `LocalAdamW`."""

from __future__ import annotations

import math

import pytest
import torch

from nemo_qwenlong.backends.megatron.optim import LocalAdamW
from nemo_qwenlong.config.loader import load_config
from nemo_qwenlong.loops.backend import schedule_steps

COSINE = ["rl.optim.schedule=cosine", "rl.optim.lr=0.001", "rl.optim.min_lr=0.0001",
          "rl.optim.warmup_steps=2"]


def _lr_after_each_step(opt: LocalAdamW, model: torch.nn.Module, n: int) -> list[float]:
    """The LR the schedule gives after 1, 2, ..., n optimiser steps (constant unit gradients)."""
    out = []
    for _ in range(n):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        opt.zero_grad()
        out.append(opt.current_lr())
    return out


def test_cosine_reaches_min_lr_after_the_last_optimizer_step_of_the_run() -> None:
    cfg = load_config(None, COSINE)  # the schema's RL batch sizes: the released 128 prompts, mini-batches 32
    assert (cfg.rl.train_batch_size, cfg.rl.mini_batch_size, cfg.rl.epochs_per_batch) == (128, 32, 1)
    model = torch.nn.Linear(2, 2)
    opt = LocalAdamW(model, cfg.rl.optim, total_steps=schedule_steps(cfg, "rl", 3))  # a run of 3 RL steps
    lrs = _lr_after_each_step(opt, model, 12)  # = its optimiser steps: 3 RL steps x 4 mini-batch updates
    assert lrs[-1] == 1e-4  # after exactly 12 optimiser steps: min_lr (1 + cos(pi) = 0)
    assert all(lr > 1e-4 for lr in lrs[:-1]), lrs  # and not before
    assert schedule_steps(cfg, "rl", 3) == 12
    # half-way through the cosine (after 2 warm-up + 5 of its 10 steps): min + (lr - min)/2
    assert lrs[6] == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * 0.5)), rel=1e-12)
    assert lrs[6] == pytest.approx(5.5e-4, rel=1e-12)


def test_epochs_multiply_and_sft_steps_are_optimizer_steps() -> None:
    cfg = load_config(None, ["rl.epochs_per_batch=2", "rl.train_batch_size=64", "rl.mini_batch_size=16"])
    assert schedule_steps(cfg, "rl", 5) == 5 * 2 * 4
    # an SFT step is one optimiser step: its micro-batches (sft.micro_batch_tokens) accumulate gradients
    assert schedule_steps(cfg, "sft", 200) == 200
    with pytest.raises(ValueError, match=r"phase='eval' is not one of \('sft', 'rl'\)"):
        schedule_steps(cfg, "eval", 1)
