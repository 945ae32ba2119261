"""Policy loss + backward: time and peak memory for 1,024 responses × 10K tokens on CPU.

Each loss level runs in a fresh subprocess so its peak RSS is its own. Prints a table and writes
benchmarks/out/bench_loss.json. Usage: python benchmarks/bench_loss.py [--rows 1024 --tokens 10000 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from process_memory import peak_rss_mb, rss_mb  # benchmarks/process_memory.py

OUT = Path(__file__).resolve().parent / "out"




def run_one(level: str, rows: int, tokens: int, repeats: int) -> dict:
    import torch

    from nemo_qwenlong.algorithms.losses import count_sequences, count_tokens, policy_loss

    torch.manual_seed(0)
    logp = torch.randn(rows, tokens) * 0.3 - 1.0
    old = logp + 0.1 * torch.randn(rows, tokens)
    adv = torch.randn(rows)
    lengths = torch.randint(tokens // 10, tokens + 1, (rows,))
    mask = torch.arange(tokens)[None, :] < lengths[:, None]
    n_tok, n_seq = count_tokens(mask), count_sequences(mask)
    base_rss = rss_mb()
    times = []
    for _ in range(repeats):
        leaf = logp.clone().requires_grad_(True)
        t0 = time.perf_counter()
        loss, _ = policy_loss(leaf, old, adv, mask, clip_low=0.2, clip_high=0.28, level=level,
                              num_global_tokens=n_tok, num_global_sequences=n_seq)
        loss.backward()
        times.append(time.perf_counter() - t0)
        del leaf, loss
    peak_mb = peak_rss_mb()
    return {
        "level": level, "rows": rows, "tokens_per_row": tokens, "valid_tokens": n_tok,
        "median_s": statistics.median(times), "min_s": min(times),
        "tokens_per_s": n_tok / statistics.median(times),
        "inputs_rss_mb": round(base_rss, 1), "peak_rss_mb": round(peak_mb, 1),
        "peak_over_inputs_mb": round(peak_mb - base_rss, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--level", choices=["token", "sequence"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.level:  # child process
        print(json.dumps(run_one(args.level, args.rows, args.tokens, args.repeats)))
        return
    results = []
    for level in ("token", "sequence"):
        cmd = [sys.executable, __file__, "--level", level, "--rows", str(args.rows), "--tokens", str(args.tokens),
               "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"policy_loss + backward, {args.rows} x {args.tokens} tokens, CPU ({platform.processor() or platform.machine()})")
    print(f"{'level':<9}{'median s':>10}{'min s':>9}{'Mtok/s':>9}{'inputs MB':>11}{'peak MB':>9}{'peak-inputs MB':>16}")
    for r in results:
        print(f"{r['level']:<9}{r['median_s']:>10.3f}{r['min_s']:>9.3f}{r['tokens_per_s'] / 1e6:>9.1f}"
              f"{r['inputs_rss_mb']:>11.0f}{r['peak_rss_mb']:>9.0f}{r['peak_over_inputs_mb']:>16.0f}")
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_loss.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT / 'bench_loss.json'}")


if __name__ == "__main__":
    main()
