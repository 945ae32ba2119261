"""Process groups: torch.distributed (gloo on CPU, nccl on GPU) and megatron's model-parallel state."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import torch
import torch.distributed as dist

from nemo_qwenlong.backends.megatron import cpu_compat
from nemo_qwenlong.ports import free_port


def init_parallel(*, tensor_parallel: int = 1, pipeline_parallel: int = 1, context_parallel: int = 1,
                  backend: str | None = None, seed: int = 1234) -> None:
    """Initialise torch.distributed from the torchrun environment (or a single local process) and megatron."""
    cpu_compat.apply()
    bind_local_device()
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in os.environ:  # a single local process: any free port (a fixed one may be taken)
            os.environ["MASTER_PORT"] = str(free_port())
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    from megatron.core import parallel_state as ps

    if not ps.model_parallel_is_initialized():
        ps.initialize_model_parallel(tensor_model_parallel_size=tensor_parallel,
                                     pipeline_model_parallel_size=pipeline_parallel,
                                     context_parallel_size=context_parallel)
    cpu_compat.seed_model_parallel(seed)


def bind_local_device(env: dict | None = None) -> int | None:
    """On CUDA, make cuda:LOCAL_RANK this process's device before any process group or tensor exists:
    NCCL, the policy (`torch.cuda.current_device()`) and the rollout engine all take it from here, so
    8 ranks on a node sit on 8 GPUs, not all on GPU 0. None (and nothing done) without CUDA."""
    if not torch.cuda.is_available():
        return None
    local = int((os.environ if env is None else env).get("LOCAL_RANK", "0"))
    if local >= torch.cuda.device_count():
        raise RuntimeError(f"LOCAL_RANK={local} but this node shows {torch.cuda.device_count()} CUDA device(s); "
                           "launch at most one rank per GPU (--nproc-per-node)")
    torch.cuda.set_device(local)
    return local


def check_layout_matches(configured: dict[str, int], initialised: dict[str, int]) -> None:
    """Refuse a model whose configured sizes differ from the process groups'. The policy splits data
    by the groups' CP/TP sizes but builds the model (TransformerConfig) from the config's, so a
    mismatch would silently train on the wrong shards. Keys: "tensor_parallel", "context_parallel"."""
    wrong = [f"parallelism.{k}={configured[k]} but the initialised process groups have {k}={initialised[k]}"
             for k in configured if configured[k] != initialised.get(k)]
    if wrong:
        raise ValueError("; ".join(wrong) + " (call init_parallel with the config's sizes before building the policy)")


def initialised_layout() -> dict[str, int]:
    """Tensor/context-parallel sizes of megatron's initialised process groups."""
    from megatron.core import parallel_state as ps

    return {"tensor_parallel": ps.get_tensor_model_parallel_world_size(),
            "context_parallel": ps.get_context_parallel_world_size()}


@contextlib.contextmanager
def single_process_group() -> Iterator[None]:
    """A world of one gloo process for tools (converters) that call dist_checkpointing; no port is
    used (file rendezvous). Does nothing if torch.distributed is already initialised."""
    cpu_compat.apply()  # dist_checkpointing needs it on CPU even when another library set up the group
    if dist.is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


def destroy_parallel() -> None:
    from megatron.core import parallel_state as ps

    ps.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
