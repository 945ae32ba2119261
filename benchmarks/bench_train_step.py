"""Tokens/s of one RL train step of the Megatron policy (forward, chunked log-probs, DAPO loss,
backward, AdamW) on a random Qwen2-shaped model, single rank.

CPU default: a small model (local spec, fp32). On a GPU (`--preset 7b-width`): Qwen2-7B width
(hidden 3584, 28 heads / 4 KV, FFN 18944, vocab 152,064) with `--layers` layers (a full 7B with
AdamW does not fit one 80 GB GPU without sharding), Transformer Engine spec, bf16 or `--fp8`.
MFU = model FLOPs / (step time × --peak-tflops), model FLOPs per token = 6·N (N = parameters
without embeddings) + 6·L·h·S (causal attention, forward + backward).
Writes benchmarks/out/bench_train_step.json. Usage: python benchmarks/bench_train_step.py [--seq 1024 ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
PRESETS = {
    "cpu-small": dict(hidden_size=256, intermediate_size=704, num_attention_heads=8, num_key_value_heads=2,
                      vocab_size=32_000, num_hidden_layers=4),
    "7b-width": dict(hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4,
                     vocab_size=152_064, num_hidden_layers=28),
}


def hf_config(preset: str, layers: int | None, seq: int) -> dict:
    cfg = dict(PRESETS[preset], rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=False,
               max_position_embeddings=max(seq, 4096))
    if layers:
        cfg["num_hidden_layers"] = layers
    return cfg


def make_batch(rows: int, seq: int, vocab: int):
    import torch

    from nemo_qwenlong.algorithms.batch import RolloutBatch

    prompt = seq * 3 // 4
    resp = seq - prompt
    g = torch.Generator().manual_seed(0)
    return RolloutBatch(
        group_ids=torch.zeros(rows, dtype=torch.int64), sample_ids=torch.arange(rows),
        prompt_ids=torch.randint(1, vocab, (rows, prompt), generator=g), prompt_lengths=torch.full((rows,), prompt),
        response_ids=torch.randint(1, vocab, (rows, resp), generator=g), response_mask=torch.ones(rows, resp, dtype=torch.bool),
        truncated=torch.zeros(rows, dtype=torch.bool), rewards=torch.zeros(rows), correct=torch.zeros(rows, dtype=torch.bool),
        item_ids=tuple(map(str, range(rows))), old_logprobs=torch.full((rows, resp), -10.0), advantages=torch.randn(rows, generator=g),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    parser.add_argument("--layers", type=int, help="override the preset's layer count")
    parser.add_argument("--seq", type=int, nargs="+", default=[512, 1024, 2048], help="tokens per row (prompt 3/4)")
    parser.add_argument("--rows", type=int, default=2, help="rows per step (one micro-batch each)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--impl", choices=["local", "transformer_engine"], default=None)
    parser.add_argument("--fp8", choices=["tensorwise", "delayed", "blockwise"], default=None)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="per-GPU dense bf16 peak (H100 SXM: 989)")
    args = parser.parse_args()

    import torch

    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig, RLConfig

    gpu = torch.cuda.is_available()
    impl = args.impl or ("transformer_engine" if gpu else "local")
    init_parallel(tensor_parallel=1)
    results = []
    for seq in args.seq:
        cfg = hf_config(args.preset, args.layers, seq)
        par = ParallelismConfig(transformer_impl=impl, fp8=args.fp8, distributed_optimizer=gpu,
                                recompute="selective" if gpu else "none", dist_backend="nccl" if gpu else "gloo")
        policy = MegatronPolicy(cfg, par, OptimConfig(lr=1e-6), dtype="bfloat16" if gpu else "float32",
                                micro_batch_tokens=seq, logprob_chunk_tokens=4096)
        batch, rl = make_batch(args.rows, seq, cfg["vocab_size"]), RLConfig()
        times = []
        for i in range(args.steps + 1):
            if gpu:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            policy.train_step(batch, rl)
            if gpu:
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
        h, n_layers = cfg["hidden_size"], cfg["num_hidden_layers"]
        n_params = sum(p.numel() for n, p in policy.module.named_parameters() if "embedding" not in n and "output_layer" not in n)
        tokens = args.rows * seq
        step = statistics.median(times)
        flops = tokens * (6 * n_params + 6 * n_layers * h * seq)
        r = {"preset": args.preset, "layers": n_layers, "impl": impl, "fp8": args.fp8, "seq": seq, "rows": args.rows,
             "step_s": round(step, 3), "tokens_per_s": round(tokens / step, 1), "params_non_embedding": n_params,
             "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1) if gpu else None,
             "mfu": round(flops / step / (args.peak_tflops * 1e12), 3) if gpu else None,
             "device": torch.cuda.get_device_name() if gpu else f"CPU {platform.machine()}"}
        results.append(r)
        print(json.dumps(r), flush=True)
        del policy
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_train_step.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT / 'bench_train_step.json'}")


if __name__ == "__main__":
    main()
