"""SDPA core attention, fused output-layer log-probs, the skipped old-log-prob pass and packed (THD)
rows, on the real megatron-core model over 2 gloo ranks at TP=1 (DP=2) and TP=2 (one torchrun
launch; see megatron_attention_worker.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.vllm_server import free_port

WORKER = Path(__file__).with_name("megatron_attention_worker.py")
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def report() -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           str(WORKER)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the worker shares megatron_policy_worker's rows
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ATTENTION ")]
    assert proc.returncode == 0 and lines, (proc.stdout[-3000:], proc.stderr[-5000:])
    return json.loads(lines[-1].removeprefix("ATTENTION "))


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("kind", ["untied", "tied"])
def test_sdpa_attention_matches_dot_product_attention_and_transformers(report: dict, tp: int, kind: str) -> None:
    r = report[f"attention-tp{tp}-{kind}"]
    assert r["params"] == (17 if kind == "untied" else 16)  # every parameter's gradient compared
    assert r["logits_vs_hf"] <= 1e-5 and r["logits_vs_dot_product"] <= 1e-5, r
    # gradients of Σ w·logits (scale ~60-120): fp32 sums in other orders, relative ~4e-7 measured
    assert r["grad_scale"] > 1.0, r
    assert r["grad_vs_dot_product"] <= 2e-6 * r["grad_scale"] and r["grad_vs_hf"] <= 2e-6 * r["grad_scale"], r


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("kind", ["untied", "tied", "padded"])
def test_fused_output_layer_logprobs_equal_the_logits_path(report: dict, tp: int, kind: str) -> None:
    r = report[f"logprobs-tp{tp}-{kind}"]
    assert r["micro_batches"] >= 2 and r["grad_scale"] > 1e-3, r
    assert r["logprob"] <= 1e-6 and r["entropy"] <= 1e-6 and r["loss"] <= 1e-6, r
    assert r["grad"] <= 1e-6, r  # every parameter, the output weight (or tied embedding) included


@pytest.mark.parametrize("tp", [1, 2])
def test_skipped_old_logprob_pass_gives_bit_identical_gradients(report: dict, tp: int) -> None:
    # one update per rollout batch: old = detached current log-probs (ratio exactly 1) must give the
    # very gradients a separate old-log-prob forward gives, so loops.rl may skip that forward
    r = report[f"old-pass-tp{tp}"]
    assert r["micro_batches"] >= 2 and r["grad_scale"] > 1e-3, r
    assert r["grads_bit_identical"] and r["grad_max_diff"] == 0.0 and r["losses_equal"], r


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("kind", ["untied", "tied", "uniform", "edges", "padded_pack", "split"])
@pytest.mark.parametrize("layout", ["packed", "shared_prompt"])
def test_packed_and_shared_prompt_layouts_equal_the_padded_one(report: dict, tp: int, kind: str, layout: str) -> None:
    # packed: attention within each row (SDPA row by row), RoPE restarting per row; shared_prompt:
    # each group's prompt once, responses attending to it, RoPE at the layout's own positions.
    # "uniform" rows take SDPA's batched paths; "edges" has a one-token prompt (no trunk) and an empty
    # response; "padded_pack" pads each packed row (valid < padded: THD RoPE split by padded lengths);
    # "split" splits each group's tree over micro-batches. Losses and every gradient as padded.
    full = report[f"layouts-tp{tp}-{kind}"]
    r = full[layout]
    assert r["logprob"] <= 1e-5 and r["entropy"] <= 1e-5 and r["probe"] <= 1e-5, r
    for name in ("token", "sequence", "sft"):
        assert r[name]["grad_scale"] > 1e-3 and r[name]["loss"] <= 1e-6, (name, r)
        assert r[name]["grad"] <= 2e-6 * max(1.0, r[name]["grad_scale"]), (name, r)
        if kind != "split":
            assert r[name]["micro_batches"][1] <= r[name]["micro_batches"][0], (name, r)
    if kind == "padded_pack" and layout == "packed":
        assert r["pack_padding"] > 0, r  # the rows really were padded
    if kind == "split":  # 24-token budget: every layout needs several micro-batches, trees included
        assert min(r["token"]["micro_batches"]) >= 3, r
    elif layout == "shared_prompt":  # 2 groups of 4: each prompt runs once, not 4 times
        assert r["tokens"] == full["tokens_trees"] < full["tokens_padded"], full
    elif kind not in ("uniform", "padded_pack"):  # rows of 5-20 tokens: the pack runs fewer tokens
        assert r["tokens"] < full["tokens_padded"], full


def test_sdpa_attention_refuses_what_needs_transformer_engine(report: dict) -> None:
    r = report["refusals"]
    assert "attention_dropout=0.1 (needs 0.0)" in r["dropout"]
    assert "packs only causal 'thd' sequences" in r["packed"] and "'sbhd'" in r["packed"]
