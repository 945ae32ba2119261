"""Streaming conversion of a multi-GB synthetic Qwen2 checkpoint: time and peak memory both ways.

Writes a random bf16 Qwen2-shaped HF folder (sharded safetensors + index; never a model in memory),
then runs HF→Megatron (TP=2 chunking) and Megatron→HF, each in a fresh process that reports its peak
RSS, next to the model size and the largest safetensors shard. Writes benchmarks/out/bench_convert.json.
Usage: python benchmarks/bench_convert.py [--layers 16 --hidden 2048 --ffn 11008 --vocab 151936 --shard-gb 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from nemo_qwenlong.backends.megatron import convert
direction, src, dst = sys.argv[1:4]
if direction == "import":
    report = convert.hf_to_megatron_checkpoint(src, dst, tp=2)
else:
    report = convert.megatron_to_hf_checkpoint(src, dst, dtype="bfloat16", max_shard_bytes=2**30)
print("RESULT " + json.dumps({"seconds": report.seconds, "peak_rss_mb": report.peak_rss_mb, "wall_s": time.perf_counter() - t0}))
"""


def synth_hf(folder: Path, layers: int, hidden: int, ffn: int, heads: int, kv: int, vocab: int, shard_bytes: int) -> int:
    import torch

    from nemo_qwenlong.backends.hf.checkpoint import expected_hf_shapes, write_sharded_safetensors

    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": hidden,
           "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 32768,
           "rope_theta": 1e6, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    _, total = write_sharded_safetensors(((name, (torch.randn(shape, generator=g) * 0.02).bfloat16())
                                          for name, shape in expected_hf_shapes(cfg).items()), folder, shard_bytes)
    (folder / "config.json").write_text(json.dumps(cfg))
    return total


def run_child(direction: str, src: Path, dst: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, direction, str(src), str(dst)], capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{direction} failed: {out.stderr[-2000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--ffn", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--shard-gb", type=float, default=1.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/nql_bench_convert"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    t0 = time.perf_counter()
    total = synth_hf(args.work / "hf", args.layers, args.hidden, args.ffn, args.heads, args.kv_heads, args.vocab,
                     int(args.shard_gb * 2**30))
    largest = max(f.stat().st_size for f in (args.work / "hf").glob("*.safetensors"))
    print(f"synthetic checkpoint: {total / 2**30:.2f} GiB bf16, largest shard {largest / 2**30:.2f} GiB "
          f"(written in {time.perf_counter() - t0:.0f} s)", flush=True)
    imp = run_child("import", args.work / "hf", args.work / "mg")
    print(f"hf→megatron (tp=2): {imp['seconds']:.1f} s, peak RSS {imp['peak_rss_mb']:.0f} MB", flush=True)
    exp = run_child("export", args.work / "mg", args.work / "back")
    print(f"megatron→hf: {exp['seconds']:.1f} s, peak RSS {exp['peak_rss_mb']:.0f} MB", flush=True)
    result = {"model_gib": total / 2**30, "largest_shard_gib": largest / 2**30, "import": imp, "export": exp,
              "shape": vars(args) | {"work": str(args.work)}, "machine": f"{platform.machine()} py{platform.python_version()}"}
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_convert.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {OUT / 'bench_convert.json'}")
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
