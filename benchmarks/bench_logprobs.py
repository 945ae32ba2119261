"""Chunked vs naive token log-probs + entropy (forward and backward) at vocab 152,064.

Logits come from a small hidden size (a [S, h] × [h, V] bf16 matmul, as the output layer makes them);
"naive" upcasts the whole [S × V] to fp32 for log_softmax, "chunked" is algorithms.logprobs. Each
(method, length) runs in a fresh subprocess so its peak RSS is its own; "peak over inputs" excludes
the bf16 logits both methods share. Prints a table, writes benchmarks/out/bench_logprobs.json.
Usage: python benchmarks/bench_logprobs.py [--lengths 1024 2048 4096 8192 --vocab 152064 --chunk 4096]
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




def run_one(method: str, length: int, vocab: int, chunk: int, hidden: int) -> dict:
    import torch

    from nemo_qwenlong.algorithms.logprobs import token_logprobs

    torch.manual_seed(0)
    h = torch.randn(length, hidden).bfloat16()
    w = (torch.randn(vocab, hidden) / hidden**0.5).bfloat16()
    targets = torch.randint(0, vocab, (length,))
    logits = (h @ w.T).requires_grad_(True)  # [S, V] bf16, shared by both methods
    base = rss_mb()
    t0 = time.perf_counter()
    if method == "naive":
        logsm = torch.log_softmax(logits.float(), dim=-1)
        lp = logsm.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        ent = -(logsm.exp() * logsm).sum(-1)
    else:
        lp, ent = token_logprobs(logits, targets, chunk_size=chunk, with_entropy=True)
    (lp.sum() + 0.01 * ent.sum()).backward()
    elapsed = time.perf_counter() - t0
    peak = peak_rss_mb()
    return {"method": method, "tokens": length, "vocab": vocab, "chunk": chunk if method == "chunked" else None,
            "seconds": round(elapsed, 3), "tokens_per_s": round(length / elapsed, 1),
            "logits_mb": round(logits.numel() * 2 / 2**20, 1), "peak_over_inputs_mb": round(peak - base, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--vocab", type=int, default=152_064)
    parser.add_argument("--chunk", type=int, default=512,
                        help="tokens per chunk; 512 × 152K fp32 = 311 MB, what 4096 tokens are at TP=8")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child[0], int(args.child[1]), args.vocab, args.chunk, args.hidden)))
        return
    results = []
    for length in args.lengths:
        for method in ("naive", "chunked"):
            cmd = [sys.executable, __file__, "--child", method, str(length), "--vocab", str(args.vocab),
                   "--chunk", str(args.chunk), "--hidden", str(args.hidden)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:  # e.g. the naive method killed for memory at long lengths
                results.append({"method": method, "tokens": length, "failed": f"exit {out.returncode}",
                                "stderr_tail": out.stderr[-300:]})
                print(f"{method:<8} {length:>6} tokens  FAILED (exit {out.returncode})", flush=True)
                continue
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{r['method']:<8} {r['tokens']:>6} tokens  {r['seconds']:>7.2f} s  {r['tokens_per_s']:>9.0f} tok/s  "
                  f"logits {r['logits_mb']:>6.0f} MB  peak over inputs {r['peak_over_inputs_mb']:>7.0f} MB", flush=True)
    print(f"machine: {platform.machine()}, {platform.python_version()}, vocab {args.vocab}, chunk {args.chunk}")
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_logprobs.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT / 'bench_logprobs.json'}")


if __name__ == "__main__":
    main()
