"""RL step metrics and a short last mini-batch on the real megatron-core policy: the same rows trained
on 1 gloo rank (DP=1) and on 2 (DP=2), one torchrun launch each (see megatron_metrics_worker.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fixtures.vllm_server import free_port

WORKER = Path(__file__).with_name("megatron_metrics_worker.py")
ROOT = Path(__file__).parents[2]
TOKEN_MEANS = ("entropy", "approx_kl", "ratio_mean", "clip_frac_low", "clip_frac_high", "dual_clip_frac")


def launch(out: Path, ranks: int) -> tuple[dict, dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port",
           str(free_port()), str(WORKER), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # the worker shares policy_worker's rows
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    return json.loads((out / "result.json").read_text()), torch.load(out / "delta.pt", weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("metrics")
    return {ranks: launch(base / f"dp{ranks}", ranks) for ranks in (1, 2)}


def test_step_metrics_with_entropy_coef_zero_reduce_over_ranks_to_the_whole_batch_value(runs: dict) -> None:
    """entropy_coef 0: entropy is still logged; every metric over 2 ranks equals the one-rank value on
    the whole batch (token-weighted means over all micro-batches and ranks, extrema over all)."""
    one, two = runs[1][0]["metrics"], runs[2][0]["metrics"]
    assert runs[2][0]["world"] == 2
    for key in (*TOKEN_MEANS, "ratio_min", "ratio_max", "num_tokens", "loss"):
        assert key in one and key in two, key
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), (key, one[key], two[key])
    # real, non-trivial values: the old log-probs are random, so the ratio is far from 1 and clipped
    assert one["entropy"] > 1.0 and one["approx_kl"] > 1e-3 and one["num_tokens"] > 20
    assert one["clip_frac_low"] > 0 and one["ratio_min"] < one["ratio_mean"] < one["ratio_max"]


def test_short_last_mini_batch_with_dp2_updates_as_dp1(runs: dict) -> None:
    """3 groups in mini-batches of 2: with DP=2 the last mini-batch's one group leaves rank 1 a
    zero-weight row; both updates (weights and metrics) equal DP=1's on the same groups."""
    (one, d1), (two, d2) = runs[1], runs[2]
    assert len(one["partial"]) == len(two["partial"]) == 2
    for a, b in zip(one["partial"], two["partial"]):
        assert b["num_tokens"] == a["num_tokens"]  # the zero-weight row adds no token to the denominator
        for key in ("loss", "grad_norm", *TOKEN_MEANS, "ratio_min", "ratio_max"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (key, a[key], b[key])
    assert d1.keys() == d2.keys()
    moved = max(float(v.abs().max()) for v in d1.values())
    diff = max(float((d1[k] - d2[k]).abs().max()) for k in d1)
    # Adam divides by √v, so the fp32 summation-order noise of near-zero gradient entries (DP=2 sums
    # two ranks' partial gradients) shows at ~1e-6 in a 2e-3 update: the bound is 0.5 % of the update
    assert moved > 1e-3 and diff <= 1e-5, (moved, diff)


def test_aepo_batch_entropy_and_masked_update_on_the_real_policy_at_dp2(runs: dict) -> None:
    """AEPO: the batch entropy read before the update equals the update's own entropy metric over every
    sample and is the same at DP=1 and DP=2 (all-reduced); the update with the non-kept rows' responses
    emptied normalises over the kept tokens only, at DP=2 as at DP=1 on the kept rows alone."""
    one, two = runs[1][0]["aepo"], runs[2][0]["aepo"]
    assert one["entropy"] == pytest.approx(runs[1][0]["metrics"]["entropy"], rel=1e-5)
    assert two["entropy"] == pytest.approx(one["entropy"], rel=1e-5)
    assert one["logprob_diff"] == 0.0 and two["logprob_diff"] == 0.0  # the same forward's log-probs
    assert 0 < len(one["kept"]) < 8 and one["kept"] == two["kept"]
    ref = one["kept_only"]
    for got in (one["masked"], two["masked"]):
        assert got["num_tokens"] == ref["num_tokens"] < runs[1][0]["metrics"]["num_tokens"]
        for key in ("loss", "grad_norm", "entropy", "ratio_mean"):
            assert got[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), (key, got[key], ref[key])
