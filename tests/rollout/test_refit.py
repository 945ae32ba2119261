"""Weight refit from the Megatron policy into the running vLLM engine (same process, as colocated):
a real optimizer step makes the engine stale, a refit makes it agree again, a wrong refit stops."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nemo_qwenlong.algorithms.batch import TokenRows
from nemo_qwenlong.rollout.refit import EngineTrainerMismatch, refit_and_check

PROMPTS = [[5, 17, 99, 3, 250, 41], [7, 7, 300, 12]]
RESPONSES = [[11, 12, 13, 14, 15], [21, 22, 23]]


@pytest.fixture(scope="module")
def policy(vllm_engine, engine_model_dir: Path):  # noqa: ANN001  (engine first: it initialises torch.distributed)
    from transformers import Qwen2ForCausalLM

    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig

    init_parallel(tensor_parallel=1)
    hf = Qwen2ForCausalLM.from_pretrained(engine_model_dir).float()
    par = ParallelismConfig(transformer_impl="local", distributed_optimizer=False, recompute="none", dist_backend="gloo")
    p = MegatronPolicy(hf.config.to_dict(), par, OptimConfig(lr=1e-2, weight_decay=0.0), dtype="float32")
    p.load_hf_state_dict({k: v.detach() for k, v in hf.state_dict().items()})
    p.original = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    return p


def engine_vs_trainer(engine, policy, probe: TokenRows) -> float:  # noqa: ANN001
    scores = engine.score(PROMPTS, RESPONSES)
    trainer = policy.compute_logprobs(probe, temperature=1.0)
    return max(abs(s - float(trainer[i, j])) for i, row in enumerate(scores) for j, s in enumerate(row))


def test_refit_after_a_real_optimizer_step(vllm_engine, hf_generator, policy) -> None:  # noqa: ANN001
    probe = TokenRows.from_lists(PROMPTS, RESPONSES)
    try:
        assert engine_vs_trainer(vllm_engine, policy, probe) < 1e-5  # same weights at start
        policy.prepare_for_training()
        for _ in range(3):
            policy.sft_step(probe)  # AdamW steps on the trainer only
        stale = engine_vs_trainer(vllm_engine, policy, probe)
        assert stale > 0.05  # the engine still serves the old weights
        policy.prepare_for_generation()
        metrics = refit_and_check(policy, vllm_engine, probe, bucket_bytes=64 * 1024, threshold=1e-3)
        assert metrics["logprob_abs_diff_mean"] < 1e-5 and metrics["logprob_abs_diff_max"] < 1e-5
        assert metrics["prob_ratio_mean"] == pytest.approx(1.0, abs=1e-5)
        assert metrics["refit_buckets"] > 3 and metrics["probe_tokens"] == 8  # 64 KB buckets: streamed in parts
        # the transformers backend refits from the same stream
        hf_metrics = refit_and_check(policy, hf_generator, probe, bucket_bytes=2**20, threshold=1e-3)
        assert hf_metrics["logprob_abs_diff_max"] < 1e-5
        # a wrong mapping (q and k swapped in one layer is caught by shape; scale a weight instead) stops the run
        broken = ((n, t * 1.5 if n.endswith("layers.0.mlp.down_proj.weight") else t) for n, t in policy.state_dict_for_refit())
        vllm_engine.load_weights(broken, bucket_bytes=2**20)

        class Stale:  # same policy, but the engine now holds the broken weights
            def state_dict_for_refit(self):
                yield from ()

            compute_logprobs = policy.compute_logprobs

        with pytest.raises(EngineTrainerMismatch, match="rollout.logprob_max_abs_diff=0.001"):
            refit_and_check(Stale(), vllm_engine, probe, bucket_bytes=2**20, threshold=1e-3)
    finally:  # leave the shared engine with the model folder's weights
        vllm_engine.load_weights(iter(policy.original.items()), bucket_bytes=2**20)
        hf_generator.load_weights(iter(policy.original.items()), bucket_bytes=2**20)
    ref = hf_generator.score(PROMPTS, RESPONSES)
    assert torch.allclose(torch.tensor(vllm_engine.score(PROMPTS, RESPONSES)[0]), torch.tensor(ref[0]), atol=1e-4)


def test_refit_holds_at_most_one_bucket_of_fresh_tensors(vllm_engine, policy) -> None:  # noqa: ANN001
    """Gathered tensors (here: fresh clones of every weight) are freed bucket by bucket: at most one bucket
    plus the tensor that closes it is alive at once, measured by `ExtraBytes` (the trainer's own parameters
    are not counted), and the refit metrics report it. The shared engine ends with the folder's weights."""
    from nemo_qwenlong.rollout.refit import ExtraBytes, refit_weights

    bucket = 256 * 1024
    sizes = [t.numel() * t.element_size() for t in policy.original.values()]
    extra = ExtraBytes(policy.model.parameters())
    try:
        stats = vllm_engine.load_weights(extra.watch((n, t.clone()) for n, t in policy.original.items()),
                                         bucket_bytes=bucket)
        assert stats.buckets > 3 and sum(sizes) > 4 * bucket  # several buckets
        assert max(sizes) <= extra.peak <= bucket + max(sizes)
        assert extra.now == 0  # everything streamed was freed
        metrics = refit_weights(policy, vllm_engine, bucket_bytes=bucket)
        assert 0 <= metrics["refit_peak_extra_mb"] * 2**20 <= bucket + max(sizes)
    finally:  # leave the shared engine with the model folder's weights (the policy has trained)
        vllm_engine.load_weights(iter(policy.original.items()), bucket_bytes=2**20)
