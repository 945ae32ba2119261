"""Each rank binds cuda:LOCAL_RANK before its process group exists (without it, every rank of an 8-GPU
node would build its policy on GPU 0 and NCCL would refuse the duplicate device). CPU machine: CUDA's
device calls are replaced by named test doubles that record what they are asked."""

from __future__ import annotations

import pytest
import torch

from nemo_qwenlong.backends.megatron import parallel


class FakeCuda:  # test double: a node with `count` CUDA devices that records set_device calls
    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
        self.calls: list[object] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", self.calls.append)


def test_each_rank_takes_the_gpu_of_its_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda(monkeypatch, 8)
    assert [parallel.bind_local_device({"LOCAL_RANK": str(r)}) for r in (0, 3, 7)] == [0, 3, 7]
    assert cuda.calls == [0, 3, 7]


def test_more_ranks_than_gpus_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="LOCAL_RANK=2 but this node shows 2 CUDA device"):
        parallel.bind_local_device({"LOCAL_RANK": "2"})
    assert cuda.calls == []


def test_no_cuda_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda(monkeypatch, 0)
    assert parallel.bind_local_device({"LOCAL_RANK": "1"}) is None and cuda.calls == []


def test_init_parallel_binds_the_device_before_the_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    monkeypatch.setattr(parallel, "bind_local_device", lambda: order.append("bind"))
    monkeypatch.setattr(parallel.dist, "is_initialized", lambda: False)

    def stop(*_a: object, **_k: object) -> None:  # test double: records the call and stops before megatron
        order.append("init_process_group")
        raise KeyboardInterrupt

    monkeypatch.setattr(parallel.dist, "init_process_group", stop)
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1"), ("RANK", "0"), ("WORLD_SIZE", "1")):
        monkeypatch.setenv(key, value)  # init_parallel's setdefault must not leak them into later tests
    with pytest.raises(KeyboardInterrupt):
        parallel.init_parallel(backend="nccl")
    assert order == ["bind", "init_process_group"]
