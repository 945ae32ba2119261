"""Global normalisation: splitting a batch into micro-batches or ranks changes neither loss nor gradient.

design.md §4.1. The 2-rank case runs two real gloo processes that all-reduce the token count.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nemo_qwenlong.algorithms.losses import count_sequences, count_tokens, policy_loss

CLIP = dict(clip_low=0.2, clip_high=0.28)
N, T = 8, 12


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logp = torch.randn(N, T, generator=g) * 0.3 - 1.0
    old = logp + 0.2 * torch.randn(N, T, generator=g)  # ratios both sides of the clip range
    adv = torch.randn(N, generator=g)
    lengths = torch.tensor([12, 1, 7, 0, 12, 3, 9, 5])  # an empty row and a single-token row
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return logp, old, adv, mask


def _loss(logp, old, adv, mask, level, n_tok, n_seq):
    return policy_loss(logp, old, adv, mask, **CLIP, level=level, num_global_tokens=n_tok,
                       num_global_sequences=n_seq, entropy=-logp.detach(), entropy_coef=0.01)[0]


def _split_loss_and_grad(level: str, parts: int):
    logp, old, adv, mask = _batch()
    leaf = logp.clone().requires_grad_(True)
    n_tok, n_seq = count_tokens(mask), count_sequences(mask)
    total = torch.zeros(())
    for rows in torch.arange(N).chunk(parts):
        micro = _loss(leaf[rows], old[rows], adv[rows], mask[rows], level, n_tok, n_seq)
        micro.backward()  # gradient accumulation, as the train step does
        total = total + micro.detach()
    return total, leaf.grad


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("parts", [2, 4])
def test_micro_batches_match_full_batch(level: str, parts: int) -> None:
    full_loss, full_grad = _split_loss_and_grad(level, 1)
    loss, grad = _split_loss_and_grad(level, parts)
    torch.testing.assert_close(loss, full_loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad, full_grad, atol=1e-7, rtol=1e-6)
    assert full_grad.abs().sum() > 0  # the check compares real gradients


def test_local_denominator_would_break_invariance() -> None:
    # The property is not vacuous: normalising each micro-batch by its own count changes the result.
    logp, old, adv, mask = _batch()
    full = _loss(logp, old, adv, mask, "token", count_tokens(mask), None)
    halves = [torch.arange(4), torch.arange(4, 8)]
    local = sum(_loss(logp[r], old[r], adv[r], mask[r], "token", count_tokens(mask[r]), None) for r in halves) / 2
    assert abs(local.item() - full.item()) > 1e-4


def _rank_worker(rank: int, world: int, init_file: str, out_dir: str, level: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    logp, old, adv, mask = _batch()
    rows = torch.arange(N).chunk(world)[rank]
    leaf = logp[rows].clone().requires_grad_(True)
    counts = torch.tensor([count_tokens(mask[rows]), count_sequences(mask[rows])], dtype=torch.float64)
    dist.all_reduce(counts)  # global valid tokens / sequences over the data-parallel group
    loss = _loss(leaf, old[rows], adv[rows], mask[rows], level, counts[0].item(), counts[1].item())
    loss.backward()
    summed = loss.detach().clone()
    dist.all_reduce(summed)
    torch.save({"rows": rows, "grad": leaf.grad, "loss": summed, "counts": counts}, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_two_gloo_ranks_match_single_process(tmp_path: Path, level: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path), level), nprocs=2, join=True)
    full_loss, full_grad = _split_loss_and_grad(level, 1)
    grad = torch.zeros_like(full_grad)
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        grad[out["rows"]] = out["grad"]
        torch.testing.assert_close(out["loss"], full_loss, atol=1e-6, rtol=1e-6)
        assert out["counts"][0].item() == count_tokens(_batch()[3])
    torch.testing.assert_close(grad, full_grad, atol=1e-7, rtol=1e-6)
