"""AEPO (QwenLong-L1.5): which samples are kept at given entropies, hysteresis across steps, and the
global token normalisation over the kept samples only at DP=2 (two real gloo processes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nemo_qwenlong.algorithms.aepo import AepoState, kept_rows, mask_rows, metrics, next_masking
from nemo_qwenlong.algorithms.losses import count_tokens, policy_loss
from nemo_qwenlong.loops.rl import mini_batch_rows, mini_batches
from tests.algorithms.helpers import make_batch

LOW, HIGH = 0.3, 0.6
ENTROPIES = [None, 0.5, 0.7, 0.5, 0.3, 0.2, 0.5, 0.6]  # each step's batch entropy (None: unknown)


def _run(mode: str) -> list[bool]:
    state, out = AepoState(), []
    for h in ENTROPIES:
        state.masking = next_masking(mode, state.masking, h, low=LOW, high=HIGH)
        out.append(state.masking)
    return out


def test_hysteresis_masks_above_high_and_stays_until_below_low() -> None:
    # None: unknown, the state stays off; .5 inside the band but not masking yet; .7 > high starts; .5 and .3 (= low,
    # not below) keep masking; .2 < low stops; .5 inside the band stays off; .6 (= high, not above) stays off
    assert _run("hysteresis") == [False, False, True, True, True, False, False, False]


def test_band_masks_strictly_inside_low_high_whatever_the_last_state() -> None:
    assert _run("band") == [False, True, False, True, False, False, True, False]


def test_kept_samples_need_a_positive_advantage_and_a_positive_reward() -> None:
    adv = torch.tensor([0.5, -0.5, 0.0, 1.0, 0.2])
    reward = torch.tensor([1.0, 0.0, 1.0, -0.1, 0.5])  # row 3: correct but overlong-penalised below 0
    assert kept_rows(adv, reward).tolist() == [True, False, False, False, True]


def test_masked_rows_keep_their_place_with_an_empty_response_mask() -> None:
    batch = make_batch([0, 0, 1, 1], [0, 1, 2, 3], [3, 2, 4, 1], [True, False, True, False])
    keep = torch.tensor([True, False, False, True])
    out = mask_rows(batch, keep)
    assert out.response_lengths.tolist() == [3, 0, 0, 1]
    assert torch.equal(out.response_ids, batch.response_ids) and out.item_ids == batch.item_ids
    state = AepoState(masking=True, entropy=0.7)
    assert metrics(state, keep, 4) == {"aepo/masking": 1.0, "aepo/entropy": 0.7, "aepo/kept": 2.0,
                                       "aepo/kept_frac": 0.5}
    assert metrics(AepoState(), None, 4)["aepo/kept"] == 4.0  # not masking: every sample trains


def test_unknown_mode_names_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="accepted: hysteresis, band"):
        next_masking("paper", False, 1.0, low=LOW, high=HIGH)


# ---- DP=2: global normalisation over the kept tokens -------------------------------------------------
GROUPS, G, T = 4, 2, 6


def _data():
    g = torch.Generator().manual_seed(3)
    lengths = [6, 2, 5, 4, 1, 6, 3, 5]
    batch = make_batch([i // G for i in range(GROUPS * G)], list(range(GROUPS * G)), lengths,
                       [True, False, False, True, True, False, True, False])
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0, 0.5, -0.5, 1.0, -1.0])
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, -0.2, 0.0])  # row 6: positive Â, negative reward
    logp = torch.randn(GROUPS * G, T, generator=g) * 0.3 - 1.0
    old = logp + 0.2 * torch.randn(GROUPS * G, T, generator=g)
    return batch.replace(advantages=adv, rewards=rewards), logp, old


def _loss(logp, old, mb, count):
    return policy_loss(logp, old, mb.advantages, mb.response_mask, clip_low=0.2, clip_high=0.28,
                       num_global_tokens=count, entropy=-logp.detach(), entropy_coef=0.01)[0]


def _rank_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    batch, logp, old = _data()
    train = mask_rows(batch, kept_rows(batch.advantages, batch.rewards))
    (rows,) = mini_batches(GROUPS, GROUPS, rank, world, G)  # the loop's deal: whole groups round-robin
    mb = mini_batch_rows(train, rows, train)
    leaf = logp[rows].clone().requires_grad_(True)
    count = torch.tensor([float(count_tokens(mb.response_mask))], dtype=torch.float64)
    dist.all_reduce(count)  # what the policy's rl_count does over the data-parallel group
    loss = _loss(leaf, old[rows], mb, count.item())
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    torch.save({"rows": torch.tensor(rows), "grad": leaf.grad, "loss": total, "count": count},
               Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_ranks_normalise_over_the_kept_tokens_only(tmp_path: Path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    batch, logp, old = _data()
    kept = kept_rows(batch.advantages, batch.rewards).nonzero().squeeze(1)
    assert kept.tolist() == [0, 3, 4]  # rows 0 and 4 on rank 0 (groups 0, 2), row 3 on rank 1
    only = batch.select(kept)  # the single-process reference: the kept samples and nothing else
    leaf = logp[kept].clone().requires_grad_(True)
    ref = _loss(leaf, old[kept], only, count_tokens(only.response_mask))
    ref.backward()
    grad = torch.zeros(GROUPS * G, T)
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert out["count"].item() == 6 + 4 + 1  # the kept rows' tokens, on both ranks
        torch.testing.assert_close(out["loss"], ref.detach(), atol=1e-6, rtol=1e-6)
        grad[out["rows"]] = out["grad"]
    torch.testing.assert_close(grad[kept], leaf.grad, atol=1e-7, rtol=1e-6)
    dropped = torch.ones(GROUPS * G, dtype=torch.bool)
    dropped[kept] = False
    assert grad[dropped].abs().sum() == 0 and leaf.grad.abs().sum() > 0
