"""GPU only. `torchrun --nproc-per-node 2 vllm_gpu_worker.py OUT_DIR`: each rank starts its own
colocated vLLM engine (external_launcher: two replicas of T=1, as `run` builds them), then sleep →
train step → refit (wakes weights, loads, wakes KV cache) → trainer/engine agreement → a seeded
generation dealt over both replicas (`rollout.replicas.EngineReplicas`) and gathered on every rank.
Rank 0 writes OUT_DIR/report.json with every rank's part."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def main() -> None:
    out = Path(sys.argv[1])
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    from nemo_qwenlong.algorithms.batch import TokenRows
    from nemo_qwenlong.backends.hf.tiny import build_tiny_qwen2
    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.backends.vllm.engine import VLLMGenerator
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig, TinyArch
    from nemo_qwenlong.loops.backend import hf_tensors
    from nemo_qwenlong.rollout.generator import SamplingSettings
    from nemo_qwenlong.rollout.refit import refit_and_check

    model_dir = out / f"model-rank{rank}"
    build_tiny_qwen2(model_dir, TinyArch(), seed=1)  # same seed: the same model on every rank
    engine = VLLMGenerator(model_dir, dtype="bfloat16", max_model_len=512, gpu_memory_utilization=0.2,
                           enforce_eager=True, sleep_mode=True, seed=rank)
    part = {"rank": rank, "local_rank": local_rank, "device_after_engine": torch.cuda.current_device(),
            "engine_bytes_on_own_gpu": torch.cuda.mem_get_info(local_rank)[1] - torch.cuda.mem_get_info(local_rank)[0]}
    init_parallel(tensor_parallel=1)  # torch.distributed already up (vLLM used the torchrun world)
    hf_config = json.loads((model_dir / "config.json").read_text())
    par = ParallelismConfig(transformer_impl="transformer_engine", recompute="none", distributed_optimizer=False)
    policy = MegatronPolicy(hf_config, par, OptimConfig(lr=1e-2), dtype="bfloat16")
    policy.load_hf_state_dict(dict(hf_tensors(model_dir)))
    prompts = [[5, 17, 99, 3, 250, 41], [7, 7, 300, 12]]
    samples = engine.generate(prompts, SamplingSettings(n=2, max_tokens=8, seed=rank))
    free_awake = torch.cuda.mem_get_info()[0]
    engine.sleep()
    part["freed_by_sleep"] = torch.cuda.mem_get_info()[0] - free_awake
    try:
        engine.generate(prompts, SamplingSettings(max_tokens=2))
        part["generate_while_asleep_refused"] = False
    except RuntimeError:
        part["generate_while_asleep_refused"] = True
    probe = TokenRows.from_lists(prompts, [list(s[0].token_ids) or [1] for s in samples])
    sft = policy.sft_step(probe)  # weights change: the woken engine must get the new ones
    part["sft_grad_norm"] = sft["grad_norm"]
    metrics = refit_and_check(policy, engine, probe, bucket_bytes=1 << 20, threshold=None)
    part |= {k: metrics[k] for k in ("logprob_abs_diff_mean", "logprob_abs_diff_max", "refit_peak_extra_mb")}
    from nemo_qwenlong.loops import dist as comm
    from nemo_qwenlong.rollout.replicas import EngineReplicas, ReplicaLayout

    replicas = EngineReplicas(engine, ReplicaLayout(dist.get_world_size(), rank, 1), comm)
    merged = replicas.generate(prompts * 3, SamplingSettings(n=2, max_tokens=8, seed=7, temperature=0.8))
    part |= {"replicas": replicas.replicas, "replica_seconds": replicas.replica_seconds,
             "merged_tokens": [[list(s.token_ids) for s in g] for g in merged]}
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    if rank == 0:
        (out / "report.json").write_text(json.dumps(parts))


if __name__ == "__main__":
    main()
