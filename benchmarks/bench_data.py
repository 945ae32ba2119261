"""Data pipeline throughput: templated prompt lengths and curriculum bucketing, items/s and peak memory.

1. The 98 real long documents of shared/data/leval (LongBench layout, up to ~55K tokens).
2. 1,600 synthetic items with DocQA-RL-1.6K's length profile (log-normal, mean ~11K, max 60K):
   generation, then templated lengths, then stage split (the paper's ≤20K / 20K-60K).

No Qwen tokenizer can be downloaded here, so the tokenizer is a 32K-vocab byte-level BPE trained
on the LEval text itself (same algorithm family and Rust implementation as Qwen's; token counts
differ from Qwen's by the vocabulary). Prints a table; writes benchmarks/out/bench_data.json.
Usage: python benchmarks/bench_data.py [--synthetic 1600]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from nemo_qwenlong.config import load_config
from nemo_qwenlong.curriculum.stages import split_by_stage, unplaced
from nemo_qwenlong.data.loaders import load_eval
from nemo_qwenlong.data.prompt import prompt_lengths
from nemo_qwenlong.data.synth import synth_items

from process_memory import peak_rss_mb  # benchmarks/process_memory.py

ROOT = Path(__file__).resolve().parents[1]
LEVAL = ROOT.parent / "shared" / "data" / "leval" / "leval_first_q_per_doc_longbench_format.jsonl"
OUT = ROOT / "benchmarks" / "out"




def train_tokenizer(texts: list[str], out_dir: Path):
    from nemo_qwenlong.backends.hf.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer(out_dir, vocab_size=32000, corpus=texts)


def measure(name: str, items, tokenizer) -> dict:
    stages = load_config(None).curriculum.stages
    t0 = time.perf_counter()
    lengths = prompt_lengths(items, tokenizer)
    splits = split_by_stage([i.item_id for i in items], lengths, stages)
    elapsed = time.perf_counter() - t0
    values = sorted(lengths.values())
    return {"set": name, "items": len(items), "seconds": round(elapsed, 2), "items_per_s": round(len(items) / elapsed, 1),
            "tokens_per_s": round(sum(values) / elapsed), "mean_tokens": round(sum(values) / len(values)),
            "max_tokens": values[-1], "per_stage": {s.name: len(s.item_ids) for s in splits},
            "filtered_overlong": len(unplaced([i.item_id for i in items], lengths, stages)), "peak_rss_mb": round(peak_rss_mb())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", type=int, default=1600)
    args = parser.parse_args()
    leval, _ = load_eval(LEVAL, "longbench", name="leval")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tok = train_tokenizer([i.messages[0]["content"] for i in leval], Path(tmp))
        train_s = time.perf_counter() - t0
    rows = [measure("leval (98 real documents)", leval, tok)]
    t0 = time.perf_counter()
    synthetic = list(synth_items(args.synthetic, min_tokens=1000, max_tokens=60000, seed=1, profile="docqa"))
    gen_s = time.perf_counter() - t0
    rows.append(measure(f"synthetic ({args.synthetic}, DocQA length profile)", synthetic, tok))
    print(f"tokenizer: 32K byte-level BPE trained on the LEval text in {train_s:.1f} s")
    print(f"synthetic generation: {args.synthetic} items in {gen_s:.1f} s ({args.synthetic / gen_s:.0f} items/s)")
    print(f"{'set':<42}{'items/s':>9}{'Mtok/s':>8}{'mean tok':>10}{'max tok':>9}{'stage1/stage2/filtered':>24}{'peak MB':>9}")
    for r in rows:
        stages = "/".join(str(v) for v in r["per_stage"].values()) + f"/{r['filtered_overlong']}"
        print(f"{r['set']:<42}{r['items_per_s']:>9}{r['tokens_per_s'] / 1e6:>8.2f}{r['mean_tokens']:>10}{r['max_tokens']:>9}"
              f"{stages:>24}{r['peak_rss_mb']:>9}")
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_data.json").write_text(json.dumps({"tokenizer_train_s": train_s, "synthetic_gen_s": gen_s, "rows": rows}, indent=2))
    print(f"wrote {OUT / 'bench_data.json'}")


if __name__ == "__main__":
    main()
