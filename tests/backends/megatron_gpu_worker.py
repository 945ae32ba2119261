"""GPU only (NCCL, Transformer Engine). torchrun --nproc-per-node {1,2} megatron_gpu_worker.py.

1. TE layer spec vs local spec, same weights, fp32: response log-probs.
2. FP8 (`tensorwise`, bf16 master weights) vs bf16: log-prob difference, and one train step runs.
3. With 2 GPUs: CP=2 vs CP=1 log-probs (TE attention, zigzag split).
Rank 0 prints "GPU <json>".
"""

from __future__ import annotations

import json

import torch
import torch.distributed as dist

from tests.backends.megatron_policy_worker import hf_model, make_batch, rl_config


def policy(**parallel):
    from megatron.core import parallel_state as ps

    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig

    dtype = parallel.pop("dtype", "float32")
    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    init_parallel(context_parallel=parallel.get("context_parallel", 1))
    cfg = ParallelismConfig(**{"recompute": "none", "distributed_optimizer": False, **parallel})
    p = MegatronPolicy(hf_model().config.to_dict(), cfg, OptimConfig(lr=1e-4), dtype=dtype, logprob_chunk_tokens=64)
    hf = hf_model()
    p.load_hf_state_dict({k: v.detach().to(torch.bfloat16 if dtype == "bfloat16" else torch.float32)
                          for k, v in hf.state_dict().items()})
    return p


def main() -> None:
    torch.cuda.set_device(int(__import__("os").environ.get("LOCAL_RANK", 0)))
    batch, report = make_batch(n=8), {}
    local = policy(transformer_impl="local").compute_logprobs(batch)
    te = policy(transformer_impl="transformer_engine").compute_logprobs(batch)
    report["te_vs_local"] = float((te - local).abs().max())
    bf16 = policy(transformer_impl="transformer_engine", dtype="bfloat16").compute_logprobs(batch)
    fp8_policy = policy(transformer_impl="transformer_engine", dtype="bfloat16", fp8="tensorwise",
                        distributed_optimizer=True)
    fp8 = fp8_policy.compute_logprobs(batch)
    mask = batch.response_mask
    report["fp8_vs_bf16"] = {"max": float((fp8 - bf16).abs()[mask].max()), "mean": float((fp8 - bf16).abs()[mask].mean())}
    step = fp8_policy.train_step(batch.replace(old_logprobs=fp8), rl_config())
    report["fp8_step"] = {"loss": step["loss"], "grad_norm": step["grad_norm"]}
    if dist.get_world_size() == 2:
        cp2 = policy(transformer_impl="transformer_engine", context_parallel=2).compute_logprobs(batch)
        report["cp2_vs_cp1"] = float((cp2 - te).abs().max())
    if dist.get_rank() == 0:
        print("GPU " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
