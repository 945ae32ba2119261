"""A vLLM OpenAI-compatible server (`vllm serve`) on loopback, started and stopped by us: `eval
generate --engine server` without `--server-url`, the judge in tests and benchmarks.

Started in its own process group so the whole tree can be stopped (or killed, to test failure
handling); ready when GET /health answers 200 (~40-65 s on 2 cores). `extra_args` go to the server
as they are (e.g. `--hf-overrides` for YaRN, see `yarn_overrides`). The server runs vLLM's V1 model
runner like the in-process engine (`server_env`), unless the caller's environment chose otherwise.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from nemo_qwenlong.backends.vllm.model_runner import select_model_runner
from nemo_qwenlong.ports import free_port  # noqa: F401 - tests import it from here

READY_TIMEOUT_S = 300


class VLLMServer:
    def __init__(self, model_dir: Path, log_path: Path, served_name: str = "judge", *, max_model_len: int = 2048,
                 dtype: str = "float32", extra_args: tuple[str, ...] = ()) -> None:
        self.model_dir, self.log_path, self.served_name = model_dir, log_path, served_name
        self.max_model_len, self.dtype, self.extra_args = max_model_len, dtype, tuple(extra_args)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "VLLMServer":
        env = server_env(os.environ)
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
               "--host", "127.0.0.1", "--port", str(self.port), "--served-model-name", self.served_name,
               "--max-model-len", str(self.max_model_len), "--enforce-eager", "--dtype", self.dtype,
               *self.extra_args]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}:\n{self._log_tail()}")
            if self.healthy():
                return self
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"vLLM server not ready after {READY_TIMEOUT_S} s:\n{self._log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def ensure_running(self) -> "VLLMServer":
        return self if self.proc is not None and self.proc.poll() is None and self.healthy() else self.start()

    def completed_requests(self) -> float:
        """Server-side count of finished requests (Prometheus `vllm:request_success_total`, all reasons)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(float(v) for v in re.findall(r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))

    def kill(self) -> None:
        """SIGKILL the whole server process group (what a crashed node looks like)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)

    def _log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"


def server_env(base: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: offline, a small CPU KV cache, and vLLM's V1 model runner like our
    in-process engines (`model_runner.select_model_runner`), so the served answers and judge verdicts
    come from the runner our tests prove."""
    env = dict(base, HF_HUB_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1", TOKENIZERS_PARALLELISM="false")
    select_model_runner(env)
    return env


def yarn_overrides(factor: float, original_max_position_embeddings: int, rope_theta: float) -> dict:
    """`--hf-overrides` for YaRN as the pinned vLLM reads it: the `rope_parameters` block **and** a
    scaled `max_position_embeddings` (without it vLLM keeps the original limit; the legacy
    `rope_scaling: {type: yarn}` form raises KeyError 'rope_type')."""
    return {"rope_parameters": {"rope_type": "yarn", "factor": factor, "rope_theta": rope_theta,
                                "original_max_position_embeddings": original_max_position_embeddings},
            "max_position_embeddings": int(factor * original_max_position_embeddings)}
