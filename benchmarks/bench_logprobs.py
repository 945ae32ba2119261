"""Token log-probs + entropy (forward and backward) at vocab 152,064: naive fp32, chunked from the
output layer's logits, and fused from the hidden states and the output weight.

Inputs are the final hidden states [S, h] and the output weight [V, h] (bf16, both requiring grad);
every method starts from them, so "peak over inputs" counts everything a method adds: the naive
path's [S × V] bf16 logits and fp32 log_softmax copies; the chunked path's logits and their bf16
gradient plus per-chunk fp32 temporaries (algorithms.logprobs.token_logprobs); the fused path's
per-chunk temporaries only (fused_token_logprobs). One fresh subprocess per (method, length), so
each peak RSS is its own. The naive path runs only up to --naive-max-tokens (8K needs > 20 GB);
its 8K peak is extrapolated linearly from its two longest runs, to print the issue-16 goal
"fused peak at 8K ≤ naive / 16". `--device cuda` measures GPU memory instead
(torch.cuda.max_memory_allocated over the inputs) and prints the GPU goal: fused peak ≤ 2 GB at
the longest length per rank (60K tokens with vocab 152,064 / TP 8 = 19,008 rows of the output
weight: `--lengths 61440 --vocab 19008 --hidden 5120 --methods chunked fused`).
Writes benchmarks/out/bench_logprobs.json.
Usage: python benchmarks/bench_logprobs.py [--lengths 2048 4096 8192 --vocab 152064 --chunk 512 --device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from process_memory import peak_rss_mb, rss_mb  # benchmarks/process_memory.py

OUT = Path(__file__).resolve().parent / "out"
METHODS = ("naive", "chunked", "fused")
GOAL_TOKENS, GOAL_RATIO = 8192, 16
GPU_GOAL_MB = 2048


def run_one(method: str, length: int, vocab: int, chunk: int, hidden: int, device: str = "cpu") -> dict:
    import torch

    from nemo_qwenlong.algorithms.logprobs import fused_token_logprobs, token_logprobs

    torch.manual_seed(0)
    h = torch.randn(length, hidden, device=device).bfloat16().requires_grad_(True)
    w = (torch.randn(vocab, hidden, device=device) / hidden**0.5).bfloat16().requires_grad_(True)
    targets = torch.randint(0, vocab, (length,), device=device)
    gpu = device != "cpu"
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() / 2**20 if gpu else rss_mb()
    t0 = time.perf_counter()
    if method == "naive":
        logsm = torch.log_softmax((h @ w.T).float(), dim=-1)
        lp = logsm.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        ent = -(logsm.exp() * logsm).sum(-1)
    elif method == "chunked":
        lp, ent = token_logprobs(h @ w.T, targets, chunk_size=chunk, with_entropy=True)
    else:
        lp, ent = fused_token_logprobs(h, w, targets, chunk_size=chunk, with_entropy=True)
    (lp.sum() + 0.01 * ent.sum()).backward()
    if gpu:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else peak_rss_mb()
    return {"method": method, "tokens": length, "vocab": vocab, "chunk": None if method == "naive" else chunk,
            "seconds": round(elapsed, 3), "tokens_per_s": round(length / elapsed, 1),
            "logits_mb": round(length * vocab * 2 / 2**20, 1), "peak_over_inputs_mb": round(peak - base, 1),
            "device": torch.cuda.get_device_name() if gpu else "cpu"}


def naive_estimate(results: list[dict], tokens: int) -> tuple[float, str] | None:
    """Peak of the naive path at `tokens`: measured, or a line through its two longest runs."""
    naive = sorted((r["tokens"], r["peak_over_inputs_mb"]) for r in results if r["method"] == "naive" and "failed" not in r)
    hit = [mb for t, mb in naive if t == tokens]
    if hit:
        return hit[0], "measured"
    if len(naive) < 2:
        return None
    (t1, m1), (t2, m2) = naive[-2:]
    return m2 + (m2 - m1) / (t2 - t1) * (tokens - t2), f"extrapolated from {t1} and {t2} tokens"


def print_goal(results: list[dict]) -> dict | None:
    fused = [r for r in results if r["method"] == "fused" and r["tokens"] == GOAL_TOKENS and "failed" not in r]
    naive = naive_estimate(results, GOAL_TOKENS)
    if not fused or naive is None:
        print(f"goal (fused peak at {GOAL_TOKENS} tokens <= naive / {GOAL_RATIO}): not measured in this run")
        return None
    got, (ref, how) = fused[0]["peak_over_inputs_mb"], naive
    ok = got <= ref / GOAL_RATIO
    print(f"goal: fused peak over inputs at {GOAL_TOKENS} tokens {got:.0f} MB vs naive {ref:.0f} MB ({how}) / "
          f"{GOAL_RATIO} = {ref / GOAL_RATIO:.0f} MB -> {'MET' if ok else 'NOT MET'} (ratio 1/{ref / got:.1f})")
    return {"fused_mb": got, "naive_mb": ref, "naive_how": how, "ratio": ref / got, "met": ok}


def print_gpu_goal(results: list[dict]) -> dict | None:
    fused = sorted((r for r in results if r["method"] == "fused" and "failed" not in r), key=lambda r: r["tokens"])
    if not fused:
        print("GPU goal (fused peak <= 2 GB per rank at 60K tokens): not measured in this run")
        return None
    r = fused[-1]
    ok = r["peak_over_inputs_mb"] <= GPU_GOAL_MB
    print(f"GPU goal: fused peak over inputs at {r['tokens']} tokens, vocab rows {r['vocab']}: "
          f"{r['peak_over_inputs_mb']:.0f} MB vs {GPU_GOAL_MB} MB -> {'MET' if ok else 'NOT MET'}")
    return {"fused_mb": r["peak_over_inputs_mb"], "tokens": r["tokens"], "vocab": r["vocab"], "met": ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--naive-max-tokens", type=int, default=4096,
                        help="longest length the naive path runs at (its 8K peak is > 20 GB)")
    parser.add_argument("--vocab", type=int, default=152_064)
    parser.add_argument("--chunk", type=int, default=512,
                        help="tokens per chunk; 512 × 152K fp32 = 311 MB, what 4096 tokens are at TP=8")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: GPU memory (max_memory_allocated) instead of process RSS")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child[0], int(args.child[1]), args.vocab, args.chunk, args.hidden, args.device)))
        return
    results = []
    for length in args.lengths:
        for method in args.methods:
            if method == "naive" and length > args.naive_max_tokens:
                continue
            cmd = [sys.executable, __file__, "--child", method, str(length), "--vocab", str(args.vocab),
                   "--chunk", str(args.chunk), "--hidden", str(args.hidden), "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:  # e.g. killed for memory
                results.append({"method": method, "tokens": length, "failed": f"exit {out.returncode}",
                                "stderr_tail": out.stderr[-300:]})
                print(f"{method:<8} {length:>6} tokens  FAILED (exit {out.returncode})", flush=True)
                continue
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{r['method']:<8} {r['tokens']:>6} tokens  {r['seconds']:>7.2f} s  {r['tokens_per_s']:>9.0f} tok/s  "
                  f"bf16 logits would be {r['logits_mb']:>6.0f} MB  peak over inputs {r['peak_over_inputs_mb']:>7.0f} MB",
                  flush=True)
    print(f"machine: {platform.machine()}, {platform.python_version()}, vocab {args.vocab}, chunk {args.chunk}, "
          f"hidden {args.hidden}")
    goal = print_goal(results) if args.device == "cpu" else print_gpu_goal(results)
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_logprobs.json").write_text(json.dumps({"results": results, "goal": goal}, indent=2))
    print(f"wrote {OUT / 'bench_logprobs.json'}")


if __name__ == "__main__":
    main()
