"""`run`'s engine checks before any stage (loops.checks.check_engine), without a process: the launch's
layout, the model's heads read from its files, and the vLLM install read from package metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_qwenlong.backends.vllm import version as vllm_version
from nemo_qwenlong.config import load_config
from nemo_qwenlong.loops.checks import RunError, check_engine, launch_shape, model_hf_config
from nemo_qwenlong.rollout.engine_layout import tp_problem

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "conf" / "tiny-cpu.yaml"


def tiny(*overrides: str):  # noqa: ANN201
    return load_config(TINY, list(overrides))


def test_one_rank_checks_its_workers_several_ranks_their_replicas() -> None:
    one = launch_shape(tiny(), 1, {}, cuda_devices=0, cores=2)
    assert (one.ranks, one.ranks_per_node, one.workers, one.heads, one.kv_heads) == (None, None, 2, 4, 2)
    assert "needs 4 CPU cores" in tp_problem(4, one) and tp_problem(2, one) is None
    gpu = launch_shape(tiny(), 1, {}, cuda_devices=8, cores=2)
    assert tp_problem(4, gpu) is None and gpu.workers_name == "CUDA devices"
    many = launch_shape(tiny(), 8, {"LOCAL_WORLD_SIZE": "2"}, cuda_devices=0, cores=2)
    assert (many.ranks, many.ranks_per_node, many.workers) == (8, 2, None)
    problem = tp_problem(4, many)
    assert "does not divide the 2 ranks of a node (this launch's ranks per node, LOCAL_WORLD_SIZE)" in problem
    assert "WORLD_SIZE of this launch" not in problem and problem.endswith("accepted: 1, 2")


def test_the_heads_come_from_the_models_files(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"num_attention_heads": 40, "num_key_value_heads": 8}))
    cfg = tiny("model.source=hf", f"model.path={hf}")
    assert model_hf_config(cfg)["num_attention_heads"] == 40
    shape = launch_shape(cfg, 2, {}, cuda_devices=0, cores=2)
    assert "does not split the model's 40 attention heads and 8 KV heads" in tp_problem(5, shape)
    assert model_hf_config(tiny("model.source=hf", f"model.path={tmp_path / 'absent'}")) is None

    meg = tmp_path / "meg"
    (meg / "iter_0000003").mkdir(parents=True)
    (meg / "latest_checkpointed_iteration.txt").write_text("3")
    (meg / "iter_0000003" / "nql_manifest.json").write_text(json.dumps({"hf_config": {"num_attention_heads": 6,
                                                                                      "num_key_value_heads": 6}}))
    assert model_hf_config(tiny("model.source=megatron", f"model.path={meg}"))["num_attention_heads"] == 6
    assert model_hf_config(tiny("model.source=megatron", f"model.path={tmp_path / 'none'}")) is None


def test_the_vllm_install_is_read_from_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "site"
    (fake / "vllm-0.1.0.dist-info").mkdir(parents=True)
    (fake / "vllm-0.1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.1.0\n")
    monkeypatch.syspath_prepend(str(fake))
    assert vllm_version.installed_vllm_version() == "0.1.0"
    with pytest.raises(RunError, match=r"rollout.backend='vllm': vLLM 0.1.0 is installed; .* 0.32.0 / 0.33.0"):
        check_engine(tiny(), 1, {})
    check_engine(tiny("rollout.backend=hf"), 1, {})  # no engine, nothing to check


def test_no_vllm_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_version, "installed_vllm_version", lambda: None)
    with pytest.raises(RunError, match="rollout.backend='vllm' but vLLM is not installed .* rollout.backend=hf"):
        check_engine(tiny(), 1, {})


def test_versions() -> None:
    assert vllm_version.vllm_version_problem("0.33.0+cu130") is None
    assert "vLLM 0.34.1 is installed" in vllm_version.vllm_version_problem("0.34.1")


def test_the_checks_import_neither_vllm_nor_megatron() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom nemo_qwenlong.config import load_config\nfrom nemo_qwenlong.loops.checks import "
            f"check_supported\ncheck_supported(load_config({str(TINY)!r}), 1)\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('vllm', 'megatron')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


@pytest.mark.parametrize("cuda", [False, True])
def test_the_transformers_engine_sits_on_the_trainers_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             cuda: bool) -> None:
    # rollout.backend=hf on a GPU: the engine generates, scores and takes refits on the trainer's GPU, not on CPU
    import torch

    from nemo_qwenlong.backends.hf import generator
    from nemo_qwenlong.loops.backend import build_engine

    built = {}
    monkeypatch.setattr(generator, "HFGenerator", lambda folder, **kw: built.update(kw) or "engine")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 512}')
    assert build_engine(tiny("rollout.backend=hf", "model.dtype=bfloat16"), tmp_path) == "engine"
    assert built == {"dtype": "bfloat16", "device": "cuda:0" if cuda else "cpu", "config_overrides": None}


@pytest.mark.parametrize("tp, cp, comm, refused", [
    (1, 2, "a2a", False),   # 4 query / 2 KV heads per rank: both divide by 2
    (2, 2, "a2a", True),    # 2 query / 1 KV head per rank: KV does not divide by 2
    (1, 4, "a2a", True),    # 4 query / 2 KV: KV does not divide by 4
    (2, 2, "p2p", False),   # p2p never splits heads
])
def test_a2a_context_parallel_needs_heads_that_divide(tp: int, cp: int, comm: str, refused: bool) -> None:
    from nemo_qwenlong.loops.checks import check_a2a_heads

    cfg = tiny("parallelism.sequence_layout=packed", "parallelism.transformer_impl=transformer_engine",
               f"parallelism.tensor_parallel={tp}",
               f"parallelism.context_parallel={cp}", f"parallelism.cp_comm_type={comm}")
    if not refused:
        check_a2a_heads(cfg)
        return
    with pytest.raises(RunError, match=r"cp_comm_type='a2a' splits .* KV heads per TP rank 1.*num_key_value_heads=2|"
                                        r"cp_comm_type='a2a' splits .* KV heads per TP rank 2"):
        check_a2a_heads(cfg)
