"""GPU-only checks of the Megatron policy (deselected without CUDA; run on a lent H100/H200)."""

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
FP8_LOGPROB_TOL = {"max": 0.5, "mean": 0.05}  # stated tolerance of FP8 (tensorwise) vs bf16 token log-probs


@pytest.fixture(scope="module")
def report() -> dict:
    n = min(2, torch.cuda.device_count())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-port",
           str(free_port()), str(WORKER)]
    root = Path(__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}  # the worker imports tests.backends helpers
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=root, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("GPU ")]
    assert proc.returncode == 0 and lines, (proc.stdout[-3000:], proc.stderr[-5000:])
    return json.loads(lines[-1].removeprefix("GPU "))


def test_transformer_engine_spec_matches_local_spec(report: dict) -> None:
    assert report["te_vs_local"] <= 1e-3  # fp32; TE attention kernels reorder reductions


def test_fp8_step_runs_within_the_stated_logprob_tolerance(report: dict) -> None:
    d = report["fp8_vs_bf16"]
    assert d["max"] <= FP8_LOGPROB_TOL["max"] and d["mean"] <= FP8_LOGPROB_TOL["mean"], d
    assert torch.isfinite(torch.tensor(report["fp8_step"]["grad_norm"]))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="context parallel CP=2 needs two GPUs")
def test_context_parallel_2_matches_1(report: dict) -> None:
    assert report["cp2_vs_cp1"] <= 1e-3
