"""Where each rank's rollout engine runs, and the sleep/wake order around a refit (vLLM rules)."""

from __future__ import annotations

import pytest

from nemo_qwenlong.backends.vllm.engine import Residency, engine_executor


def torchrun_env(rank: int, world: int, per_node: int = 8) -> dict[str, str]:
    return {"RANK": str(rank), "LOCAL_RANK": str(rank % per_node), "WORLD_SIZE": str(world)}


def test_every_torchrun_rank_gets_its_own_local_gpu() -> None:
    """The uniprocessor executor takes the device index from device_config ("cuda" → 0), so 8 ranks
    put 8 engines on cuda:0; vLLM's external_launcher reads RANK / LOCAL_RANK instead."""
    devices = []
    for rank in range(16):
        kwargs, device = engine_executor(torchrun_env(rank, 16), cuda=True, tensor_parallel=1)
        assert kwargs == {"distributed_executor_backend": "external_launcher"}  # vLLM DP 1: replicas side by side
        devices.append(device)
    assert devices == [r % 8 for r in range(16)]


def test_external_launcher_replicas_on_cuda_and_cpu() -> None:
    # 32 ranks, T=4: 8 replicas, each rank on its local GPU; on CPU (gloo) the same executor, no device
    kwargs, device = engine_executor(torchrun_env(5, 32), cuda=True, tensor_parallel=4)
    assert kwargs == {"distributed_executor_backend": "external_launcher"} and device == 5
    kwargs, device = engine_executor(torchrun_env(1, 2, per_node=2), cuda=False, tensor_parallel=2)
    assert kwargs == {"distributed_executor_backend": "external_launcher"} and device is None
    with pytest.raises(ValueError, match="rollout.tensor_parallel=3 does not divide the 32"):
        engine_executor(torchrun_env(0, 32), cuda=True, tensor_parallel=3)
    with pytest.raises(RuntimeError, match="without \\['LOCAL_RANK'\\]"):
        engine_executor({"WORLD_SIZE": "2", "RANK": "0"}, cuda=True, tensor_parallel=1)


def test_single_process_and_cpu_keep_the_in_process_executor() -> None:
    assert engine_executor({}, cuda=False, tensor_parallel=1) == ({"distributed_executor_backend": "uni"}, None)
    assert engine_executor({}, cuda=True, tensor_parallel=1) == ({"distributed_executor_backend": "uni"}, 0)
    assert engine_executor({}, cuda=True, tensor_parallel=2) == ({}, None)


def test_sleep_then_refit_wakes_weights_first_and_the_kv_cache_last() -> None:
    r = Residency()
    r.sleep()
    with pytest.raises(RuntimeError, match="while the rollout engine sleeps"):
        r.require_awake("generate")
    with pytest.raises(RuntimeError, match="weight refit while the engine's weights are asleep"):
        r.refitted()
    with pytest.raises(RuntimeError, match="KV cache before the weights were refitted"):
        r.wake_kv_cache()
    r.wake_weights()
    with pytest.raises(RuntimeError, match="KV cache before the weights were refitted"):
        r.wake_kv_cache()  # the weights are resident but still the discarded ones
    r.refitted()
    r.wake_kv_cache()
    r.require_awake("generate")
    r.sleep()
    with pytest.raises(RuntimeError, match="already"):
        r.sleep()


def test_refit_stops_when_vllm_keeps_the_prefix_cache(vllm_engine, engine_model_dir) -> None:  # noqa: ANN001
    """`LLM.reset_prefix_cache()` returns False (and keeps the cache) while requests run; ignoring
    it would serve KV computed with the old weights. Real engine, one request left running."""
    from vllm import SamplingParams

    from nemo_qwenlong.loops.backend import hf_tensors

    engine = vllm_engine.llm.llm_engine
    engine.add_request("nql-running", {"prompt_token_ids": [1, 2, 3]}, SamplingParams(max_tokens=64))
    engine.step()  # scheduled: now running
    try:
        with pytest.raises(RuntimeError, match="refused to reset the prefix cache"):
            vllm_engine.load_weights(hf_tensors(engine_model_dir), bucket_bytes=2**20)
    finally:
        engine.abort_request(["nql-running"])
    vllm_engine.load_weights(hf_tensors(engine_model_dir), bucket_bytes=2**20)  # idle again: resets
