"""Test tiers: the default run is everything that can run on CPU; `gpu` tests need a CUDA device."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HAS_GPU = torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_GPU:
        return
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]


def pytest_report_header(config: pytest.Config) -> str:
    return f"nemo_qwenlong: gpu={'yes' if HAS_GPU else 'no (gpu-marked tests deselected)'}"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def cli_exe() -> str:
    """The installed console script of the running interpreter's environment."""
    exe = Path(sys.executable).parent / "nemo-qwenlong"
    found = str(exe) if exe.exists() else shutil.which("nemo-qwenlong")
    assert found, "nemo-qwenlong console script is not installed (run `make setup`)"
    return found


@pytest.fixture()
def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny HF Qwen2 folders (untied, tied, odd vocabulary; sharded safetensors + index), built offline once."""
    from nemo_qwenlong.backends.hf.tiny import build_tiny_qwen2
    from nemo_qwenlong.config.training import TinyArch

    out = {}
    # "padded": an odd vocabulary (511) that TP=2 must pad to 512 rows
    for kind, arch in (("untied", TinyArch()), ("tied", TinyArch(tie_word_embeddings=True)),
                       ("padded", TinyArch(vocab_size=511))):
        folder = tmp_path_factory.mktemp(kind)
        model = build_tiny_qwen2(folder, arch, seed=3 + len(out))
        for f in folder.glob("*.safetensors"):
            f.unlink()
        model.save_pretrained(folder, max_shard_size="150KB")  # several shards + index
        out[kind] = folder
    return out


@pytest.fixture()
def judge_server(judge_server_session: "VLLMServer") -> "VLLMServer":
    """The session's judge server, running (a test that killed it does not break the next one)."""
    return judge_server_session.ensure_running()


@pytest.fixture(scope="session")
def judge_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator["VLLMServer"]:
    """One real vLLM judge server per pytest run (reward and loop tests), serving the scripted tiny
    judge model: every verdict is "[[YES]]"."""
    from tests.fixtures.scripted_judge import build_scripted_judge
    from tests.fixtures.vllm_server import VLLMServer

    root = tmp_path_factory.mktemp("judge")
    model_dir = build_scripted_judge(root / "model")
    server = VLLMServer(model_dir, root / "vllm.log").start()
    try:
        yield server
    finally:
        server.stop()
