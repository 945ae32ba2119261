"""The pieces compose the way the RL loop will use them (design.md §1), with real components only:
HF tiny Qwen2 → converter → Megatron policy → vLLM rollouts → rewards and GRPO advantages →
trainer log-probs → DAPO train step → refit + agreement check → checkpoint → HF export → reload."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from nemo_qwenlong.algorithms.advantages import compute_advantages
from nemo_qwenlong.algorithms.dynamic_sampling import mixed_groups
from nemo_qwenlong.rollout.generator import SamplingSettings, to_rollout_batch
from nemo_qwenlong.rollout.refit import probe_rows, refit_and_check

G = 4
PROMPTS = [[5, 17, 99, 3, 250, 41], [7, 7, 300, 12], [101, 102, 103], [44, 45, 46, 47, 48]]


def test_one_rl_step_through_every_component(vllm_engine, engine_model_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    import json

    from nemo_qwenlong.backends.hf.generator import HFGenerator
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt
    from nemo_qwenlong.backends.megatron.convert import hf_to_megatron_checkpoint, megatron_to_hf_checkpoint
    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.schema import RunConfig

    hf_to_megatron_checkpoint(engine_model_dir, tmp_path / "start")
    manifest = json.loads((tmp_path / "start" / "iter_0000000" / ckpt.MANIFEST).read_text())
    cfg = RunConfig.model_validate({
        "model": {"dtype": "float32"}, "rollout": {"temperature": 1.0, "top_p": 1.0},
        "parallelism": {"transformer_impl": "local", "distributed_optimizer": False, "recompute": "none",
                        "dist_backend": "gloo"},
        "rl": {"optim": {"lr": 5e-3, "weight_decay": 0.0}, "clip_high": 0.28, "group_size": G}})
    init_parallel(tensor_parallel=1)
    policy = MegatronPolicy.from_run_config(cfg, manifest["hf_config"])
    ckpt.load_checkpoint(policy, tmp_path / "start")
    try:
        policy.prepare_for_generation()
        settings = dataclasses.replace(SamplingSettings.for_training(cfg.rollout, n=G, seed=3), max_tokens=8)
        samples = vllm_engine.generate(PROMPTS, settings)
        batch = to_rollout_batch(PROMPTS, samples, [f"item{i}" for i in range(len(PROMPTS))])
        # a rule reward the random policy sometimes earns: the first response token is even
        correct = batch.response_ids[:, 0] % 2 == 0
        keep = mixed_groups(correct, G).repeat_interleave(G)
        assert keep.any(), "no group with mixed rewards: pick other prompts or seed"
        batch = batch.replace(rewards=correct.float(), correct=correct).select(torch.nonzero(keep).flatten())
        advantages = compute_advantages("grpo", batch.rewards, G)
        old = policy.compute_logprobs(batch)  # trainer recompute at the rollout temperature
        engine_lp = torch.zeros_like(old)  # the engine's own sampled-token log-probs, same definition at T=1
        kept = [sample for g, group in enumerate(samples) if keep[g * G] for sample in group]
        for row, sample in enumerate(kept):
            engine_lp[row, : len(sample.logprobs)] = torch.tensor(sample.logprobs)
        assert torch.allclose(engine_lp[batch.response_mask], old[batch.response_mask], atol=1e-4)

        policy.prepare_for_training()
        metrics = policy.train_step(batch.replace(old_logprobs=old, advantages=advantages), cfg.rl)
        assert torch.isfinite(torch.tensor([metrics["loss"], metrics["grad_norm"]])).all() and metrics["lr"] == 5e-3
        new = policy.compute_logprobs(batch)
        moved = ((new - old) * batch.response_mask).sum(1)
        assert float((advantages * moved).sum()) > 0  # rewarded responses became likelier, the others less

        policy.prepare_for_generation()
        agree = refit_and_check(policy, vllm_engine, probe_rows(PROMPTS, samples, 2), bucket_bytes=2**20,
                                threshold=1e-3)
        assert agree["logprob_abs_diff_max"] < 1e-5

        ckpt.save_checkpoint(policy, tmp_path / "run", 1, config_hash="pipeline-test")
        megatron_to_hf_checkpoint(tmp_path / "run", tmp_path / "export", dtype="float32")
        exported = HFGenerator(tmp_path / "export")
        probe = probe_rows(PROMPTS, samples, 2)
        prompts, conts = probe.to_lists()
        trainer = policy.compute_logprobs(probe, temperature=1.0)
        for i, scores in enumerate(exported.score(prompts, conts)):
            assert torch.allclose(torch.tensor(scores), trainer[i, : len(scores)], atol=1e-5)
    finally:  # leave the shared engine serving the model folder's weights
        from safetensors.torch import load_file

        vllm_engine.load_weights(iter(load_file(engine_model_dir / "model.safetensors").items()), bucket_bytes=2**20)
