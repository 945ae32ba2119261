"""One real vLLM judge server per pytest run, serving the scripted tiny judge model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.scripted_judge import build_scripted_judge
from tests.fixtures.vllm_server import VLLMServer


@pytest.fixture(scope="session")
def judge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    root = tmp_path_factory.mktemp("judge")
    model_dir = build_scripted_judge(root / "model")
    server = VLLMServer(model_dir, root / "vllm.log").start()
    try:
        yield server
    finally:
        server.stop()
