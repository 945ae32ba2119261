"""`nemo-qwenlong smoke`: the LLM-side stack for a few RL steps on a tiny random Qwen2 (CPU).

Every component is the real one: a tiny HF Qwen2 is built offline, converted to a Megatron
checkpoint, loaded into the Megatron policy; each step samples `rl.group_size` responses per
prompt with the rollout engine (`rollout.backend`: vLLM in-process or transformers), rewards them,
computes GRPO advantages and the trainer's old log-probs, takes one DAPO step, refits the engine
and checks engine–trainer agreement; at the end a checkpoint is saved and exported to HF.

It is **not** the QwenLong-L1 training loop: no curriculum, no dynamic-sampling refill, no judge,
no resume. The reward is a toy that a random policy can improve on in a few steps: the share of
even token ids in the response (dense, in [0, 1]).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from nemo_qwenlong.algorithms.advantages import compute_advantages
from nemo_qwenlong.config import RunConfig
from nemo_qwenlong.rollout.generator import SamplingSettings, to_rollout_batch
from nemo_qwenlong.rollout.refit import probe_rows, refit_and_check

log = logging.getLogger(__name__)
PROMPTS = 8


def even_share(response_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Toy reward per row: the share of valid response tokens with an even id (0 for empty rows)."""
    even = ((response_ids % 2 == 0) & mask).sum(1).float()
    return even / mask.sum(1).clamp(min=1).float()


def _engine(cfg: RunConfig, model_dir: Path):  # noqa: ANN202
    if cfg.rollout.backend == "vllm":
        from nemo_qwenlong.backends.vllm.engine import VLLMGenerator

        return VLLMGenerator.from_rollout_config(model_dir, cfg.rollout, dtype=cfg.model.dtype,
                                                 max_model_len=cfg.model.tiny.max_position_embeddings, seed=cfg.seed)
    from nemo_qwenlong.backends.hf.generator import HFGenerator

    return HFGenerator(model_dir, dtype=cfg.model.dtype)


def run_smoke(cfg: RunConfig, run_dir: Path, steps: int) -> list[dict]:
    """Run `steps` RL steps (see the module docstring); returns the per-step metrics."""
    from nemo_qwenlong.backends.hf.tiny import build_tiny_qwen2
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt
    from nemo_qwenlong.backends.megatron.convert import hf_to_megatron_checkpoint, megatron_to_hf_checkpoint
    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy

    if cfg.model.source != "tiny-random":
        raise ValueError(f"smoke runs on model.source='tiny-random' only, got {cfg.model.source!r}")
    started = time.perf_counter()
    build_tiny_qwen2(run_dir / "hf_init", cfg.model.tiny, seed=cfg.seed)
    print(hf_to_megatron_checkpoint(run_dir / "hf_init", run_dir / "megatron_init").line())
    engine = _engine(cfg, run_dir / "hf_init")
    init_parallel(tensor_parallel=cfg.parallelism.tensor_parallel, seed=cfg.seed)
    manifest = json.loads((run_dir / "megatron_init" / "iter_0000000" / ckpt.MANIFEST).read_text())
    policy = MegatronPolicy.from_run_config(cfg, manifest["hf_config"], total_steps=steps,
                                            padded_vocab_size=manifest["padded_vocab_size"])
    ckpt.load_checkpoint(policy, run_dir / "megatron_init")
    g = torch.Generator().manual_seed(cfg.seed)
    vocab = cfg.model.tiny.vocab_size
    prompts = [torch.randint(3, vocab, (int(torch.randint(8, 32, (1,), generator=g)),), generator=g).tolist()
               for _ in range(PROMPTS)]
    group = cfg.rl.group_size
    records = []
    metrics_path = run_dir / "smoke_metrics.jsonl"
    for step in range(steps):
        policy.prepare_for_generation()
        settings = SamplingSettings.for_training(cfg.rollout, n=group, seed=cfg.seed * 10_000 + step)
        t0 = time.perf_counter()
        samples = engine.generate(prompts, settings)
        gen_s = time.perf_counter() - t0
        batch = to_rollout_batch(prompts, samples, [f"prompt{i}" for i in range(PROMPTS)], first_group_id=step * PROMPTS)
        rewards = even_share(batch.response_ids, batch.response_mask)
        batch = batch.replace(rewards=rewards, correct=rewards > 0.5)
        advantages = compute_advantages(cfg.rl.advantage_estimator, rewards, group, eps=cfg.rl.adv_eps,
                                        std_normalize=cfg.rl.std_normalize)
        old = policy.compute_logprobs(batch)
        policy.prepare_for_training()
        train = policy.train_step(batch.replace(old_logprobs=old, advantages=advantages), cfg.rl)
        policy.prepare_for_generation()
        agree = refit_and_check(policy, engine, probe_rows(prompts, samples, cfg.rollout.logprob_probe_size),
                                bucket_bytes=cfg.rollout.refit_bucket_mb * 2**20,
                                threshold=cfg.rollout.logprob_max_abs_diff)
        record = {"step": step + 1, "reward_mean": float(rewards.mean()), "truncated_frac": float(batch.truncated.float().mean()),
                  "response_len_mean": float(batch.response_lengths.float().mean()), "generate_s": gen_s,
                  **{k: train[k] for k in ("loss", "grad_norm", "lr", "clip_frac_high", "clip_frac_low", "entropy") if k in train},
                  **agree}
        records.append(record)
        with metrics_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"step {step + 1}/{steps}: reward {record['reward_mean']:.3f}  loss {record['loss']:+.4f}  "
              f"grad norm {record['grad_norm']:.3f}  engine-trainer |Δlogp| max {agree['logprob_abs_diff_max']:.1e}  "
              f"refit {agree['refit_seconds'] * 1000:.0f} ms", flush=True)
    ckpt.save_checkpoint(policy, run_dir / "checkpoints", steps, config_hash=manifest["config_hash"])
    print(megatron_to_hf_checkpoint(run_dir / "checkpoints", run_dir / "hf_final", dtype=cfg.model.dtype).line())
    print(f"smoke finished in {time.perf_counter() - started:.0f} s; metrics: {metrics_path}")
    return records
