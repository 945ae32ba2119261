"""Tokens/s of one RL train step of the Megatron policy (forward, chunked log-probs, DAPO loss,
backward, AdamW) on a random Qwen2-shaped model, single rank.

CPU default: a small model (local spec, fp32). On a GPU (`--preset 7b-width`): Qwen2-7B width
(hidden 3584, 28 heads / 4 KV, FFN 18944, vocab 152,064) with `--layers` layers (a full 7B with
AdamW does not fit one 80 GB GPU without sharding), Transformer Engine spec, bf16 or `--fp8`.
MFU = model FLOPs / (step time × --peak-tflops), model FLOPs per token = 6·N (N = parameters
without embeddings) + 6·L·h·S (causal attention, forward + backward).
`--shape mixed` gives row i (of --rows) seq·(i+1)/rows tokens (documents of many lengths);
`--shape group` gives every row one prompt (3/4 seq) and responses of seq/8..seq/4 (a GRPO group);
`--layout` times each `parallelism.sequence_layout` on it (one micro-batch of all rows); tokens/s
counts valid tokens. Writes benchmarks/out/bench_train_step.json.
Usage: python benchmarks/bench_train_step.py [--seq 1024 ...] [--shape uniform|mixed|group] [--layout padded packed ...]
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


def train_flops(tokens: int, params_non_embedding: int, layers: int, hidden: int, seq: int) -> float:
    """Model FLOPs of one training step: 6·N per token plus causal attention, 6·L·h·S per token of an
    S-token row (forward + backward; the causal half of 12·L·h·S)."""
    return tokens * (6 * params_non_embedding + 6 * layers * hidden * seq)


def make_batch(rows: int, seq: int, vocab: int, shape: str = "uniform"):
    import torch

    from nemo_qwenlong.algorithms.batch import RolloutBatch

    prompt = seq * 3 // 4
    resp = seq - prompt
    g = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(1, vocab, (rows, prompt), generator=g)
    prompt_lengths = torch.full((rows,), prompt)
    resp_lengths = torch.full((rows,), resp)
    if shape == "mixed":  # row i: seq·(i+1)/rows tokens, 3/4 prompt
        total = torch.tensor([max(seq * (i + 1) // rows, 4) for i in range(rows)])
        prompt_lengths, resp_lengths = total * 3 // 4, total - total * 3 // 4
    elif shape == "group":  # one prompt, responses of seq/8 .. seq/4
        prompt_ids = prompt_ids[:1].expand(rows, -1).clone()
        resp_lengths = torch.linspace(seq // 8, resp, rows).long()
    mask = torch.arange(resp).unsqueeze(0) < resp_lengths.unsqueeze(1)
    return RolloutBatch(
        group_ids=torch.zeros(rows, dtype=torch.int64), sample_ids=torch.arange(rows),
        prompt_ids=prompt_ids, prompt_lengths=prompt_lengths,
        response_ids=torch.randint(1, vocab, (rows, resp), generator=g), response_mask=mask,
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
    parser.add_argument("--shape", choices=["uniform", "mixed", "group"], default="uniform")
    parser.add_argument("--layout", nargs="+", choices=["padded", "packed", "shared_prompt"], default=["padded"],
                        help="parallelism.sequence_layout(s) to time; with more than one, all rows share one micro-batch")
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
    for seq, layout in [(seq, layout) for seq in args.seq for layout in args.layout]:
        cfg = hf_config(args.preset, args.layers, seq)
        par = ParallelismConfig(transformer_impl=impl, fp8=args.fp8, distributed_optimizer=gpu, sequence_layout=layout,
                                recompute="selective" if gpu else "none", dist_backend="nccl" if gpu else "gloo")
        budget = seq * args.rows if len(args.layout) > 1 else seq
        policy = MegatronPolicy(cfg, par, OptimConfig(lr=1e-6), dtype="bfloat16" if gpu else "float32",
                                micro_batch_tokens=budget, logprob_chunk_tokens=4096)
        batch, rl = make_batch(args.rows, seq, cfg["vocab_size"], args.shape), RLConfig()
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
        tokens = int((batch.prompt_lengths + batch.response_lengths).sum())  # valid tokens
        step = statistics.median(times)
        flops = train_flops(tokens, n_params, n_layers, h, seq)
        r = {"preset": args.preset, "layers": n_layers, "impl": impl, "fp8": args.fp8, "seq": seq, "rows": args.rows,
             "shape": args.shape, "layout": layout,
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
