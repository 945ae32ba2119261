"""GPU-only checks of the Megatron policy (deselected without CUDA; run on a lent H100/H200 with
`bash tests/gpu_checks.sh`). Each check is its own torchrun launch (megatron_gpu_worker.py), so one
failing path reports itself without taking the others down.

Tolerances are stated against two numbers measured on the same inputs (worker `references`):
`baseline` = |bf16 − fp32| (the rounding every bf16 run carries) and `bug` = the change two swapped
query heads make (a mapping bug). A check passes when its difference is within a small multiple of
the baseline and well below the bug; the model's log-probs are spread (std > 1 nat), so the bug is
not hidden by a near-uniform output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fixtures.vllm_server import free_port

pytestmark = pytest.mark.gpu
WORKER = Path(__file__).with_name("megatron_gpu_worker.py")
ROOT = Path(__file__).parents[2]
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")


def run_check(check: str, tmp: Path, nproc: int = 1) -> dict:
    out = tmp / f"{check}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
           str(free_port()), str(WORKER), check, str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the worker imports tests.backends helpers
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert proc.returncode == 0 and out.is_file(), (check, proc.stdout[-3000:], proc.stderr[-5000:])
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    r = run_check("references", tmp_path_factory.mktemp("refs"))
    assert r["spread_std"] > 1.0, r  # not near-uniform: a bug moves log-probs by a visible amount
    assert r["bug"]["mean"] > 10 * r["baseline"]["mean"], r  # the tolerances below can tell a bug apart
    return r


def within(d: dict, refs: dict, *, baseline_x: float, bug_fraction: float) -> bool:
    return d["mean"] <= max(baseline_x * refs["baseline"]["mean"], 1e-6) and d["mean"] <= bug_fraction * refs["bug"]["mean"]


def test_transformer_engine_spec_matches_local_spec(tmp_path: Path, refs: dict) -> None:
    d = run_check("te_vs_local", tmp_path)["te_vs_local"]
    assert d["max"] <= 1e-3, d  # fp32 both; TE kernels reorder reductions only


@pytest.mark.parametrize("recipe", ["tensorwise", "delayed", "blockwise"])
def test_fp8_recipe_within_its_tolerance(recipe: str, tmp_path_factory: pytest.TempPathFactory, refs: dict) -> None:
    report = _fp8_report(tmp_path_factory)[recipe]
    assert "error" not in report, report["error"] if "error" in report else ""
    # FP8 (E4M3 forward) rounds ~16× coarser than bf16: allow 30× the bf16 baseline, and at most a
    # quarter of what a mapping bug does.
    assert within(report["vs_bf16"], refs, baseline_x=30, bug_fraction=0.25), (report, refs)
    assert torch.isfinite(torch.tensor(report["grad_norm"])) and report["skipped_steps"] == 0


_FP8: dict = {}


def _fp8_report(factory: pytest.TempPathFactory) -> dict:
    if not _FP8:
        _FP8.update(run_check("fp8", factory.mktemp("fp8"))["fp8"])
    return _FP8


def test_selective_and_full_recompute_change_nothing(tmp_path: Path, refs: dict) -> None:
    r = run_check("recompute", tmp_path)["recompute"]
    for mode in ("selective", "full"):
        assert r[mode]["vs_none"]["max"] <= 1e-6, (mode, r)  # same forward kernels: identical log-probs
        assert r[mode]["grad_norm_rel"] <= 1e-2, (mode, r)  # backward re-runs the forward: bf16 order


@two_gpus
def test_context_parallel_2_matches_1_in_bf16(tmp_path: Path, refs: dict) -> None:
    d = run_check("cp", tmp_path, nproc=2)["cp2_vs_cp1"]
    assert within(d, refs, baseline_x=3, bug_fraction=0.1), (d, refs)


@two_gpus
def test_sequence_parallel_on_matches_off(tmp_path: Path, refs: dict) -> None:
    r = run_check("sp", tmp_path, nproc=2)
    assert within(r["sp_vs_no_sp"], refs, baseline_x=3, bug_fraction=0.1), (r, refs)
    assert r["sp_fp8_one_row_finite"]  # FP8 + SP with a one-row micro-batch: padding_multiple's case


@two_gpus
def test_distributed_optimizer_checkpoint_round_trip_with_resharding(tmp_path: Path, refs: dict) -> None:
    r = run_check("dist_ckpt", tmp_path, nproc=2)["dist_ckpt"]
    assert r["has_state_before_step"] is False and r["has_state_after_step"] is True, r
    assert within(r["resharded_vs_saved"], refs, baseline_x=3, bug_fraction=0.1), (r, refs)
    assert r["step_after_load_finite"], r


def test_packed_thd_sequences_match_the_padded_layout(tmp_path: Path, refs: dict) -> None:
    # THD packing through TE attention (cu_seqlens, padding_causal): same log-probs and gradients as
    # the padded rectangle, on the valid tokens only; two GPUs add CP=2 (per-row zigzag) with each
    # cp_comm_type (all_gather and a2a against the p2p padded reference: the config allows them with
    # packed since TE 2.20, issue 25.5) and TP=2+SP
    r = run_check("packed", tmp_path, nproc=min(2, torch.cuda.device_count()))
    assert r["cp_indices_match_te"], r  # our per-row CP split is TE's thd_get_partitioned_indices
    assert r["tp1_padded"]["pack_padding"] > 0, r  # one GPU still runs padded THD rows
    layouts = ("tp1", "tp1_padded", "cp2", "cp2_all_gather", "cp2_a2a", "tp2_sp")
    assert torch.cuda.device_count() < 2 or all(k in r for k in layouts), sorted(r)
    for name in [k for k in layouts if k in r]:
        assert within(r[name]["vs_padded"], refs, baseline_x=3, bug_fraction=0.1), (name, r, refs)
        # the worst token too: an error confined to the row carrying the pack's tail padding
        assert r[name]["vs_padded"]["max"] <= 0.25 * refs["bug"]["max"], (name, r, refs)
        assert r[name]["grad_rel"] <= 0.05, (name, r)  # bf16 sums in another order
        if name != "tp1_padded":  # the valid tokens, not the rectangle
            assert r[name]["pack_tokens"] < r[name]["padded_tokens"], (name, r)
