"""GPU only: two torchrun ranks, each with its own colocated vLLM engine replica on its own GPU; sleep
(level 2) frees memory, generation while asleep is refused, the refit that wakes the engine brings
trainer/engine agreement (bf16 both), and a generation dealt over the two replicas is gathered
identically on both ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fixtures.vllm_server import free_port

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two ranks' engines need two GPUs")]
WORKER = Path(__file__).with_name("vllm_gpu_worker.py")
ROOT = Path(__file__).parents[2]


def test_two_ranks_engines_sleep_refit_and_agree(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port()), str(WORKER), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-6000:])
    parts = json.loads((tmp_path / "report.json").read_text())
    assert [p["device_after_engine"] for p in parts] == [0, 1]  # each engine on its rank's GPU
    for p in parts:
        assert p["engine_bytes_on_own_gpu"] > 0 and p["freed_by_sleep"] > 0, p
        assert p["generate_while_asleep_refused"], p
        assert p["logprob_abs_diff_mean"] < 0.05, p  # bf16 engine vs bf16 trainer after the refit
        assert p["replicas"] == 2 and len(p["replica_seconds"]) == 2, p
    assert parts[0]["merged_tokens"] == parts[1]["merged_tokens"] and len(parts[0]["merged_tokens"]) == 6
