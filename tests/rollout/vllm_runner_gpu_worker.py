"""GPU only. `python vllm_runner_gpu_worker.py MODEL_DIR OUT_JSON` with VLLM_USE_V2_MODEL_RUNNER set by
the caller (0: V1, 1: V2): one CUDA engine built by VLLMGenerator (bf16, eager), then the behaviours
our CPU tests prove on V1: seeded samples reproduce and do not depend on the batch, sampled log-probs
(temperature 1: processed = raw) agree with the engine's own prompt log-probs of the same sequences.
Writes the runner vLLM built, the samples, greedy tokens and the log-probs of fixed sequences."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

PROMPTS = [[5, 17, 99, 3, 250, 41], [7, 7, 300, 12], [101, 102, 103]]
FIXED = [[9, 8, 7, 6, 5, 4], [100, 200, 300], [42, 42, 42, 42, 42]]  # continuations both runners score
N, SEED, MAX_TOKENS = 4, 11, 16


def main() -> None:
    from nemo_qwenlong.backends.vllm.engine import VLLMGenerator
    from nemo_qwenlong.backends.vllm.model_runner import RUNNER_VARIABLE
    from nemo_qwenlong.rollout.generator import SamplingSettings, sample_seed

    model_dir, out = sys.argv[1], Path(sys.argv[2])
    requested = os.environ[RUNNER_VARIABLE]
    engine = VLLMGenerator(model_dir, dtype="bfloat16", max_model_len=512, gpu_memory_utilization=0.3,
                           enforce_eager=True, seed=0)
    worker = engine.llm.llm_engine.model_executor.driver_worker.worker
    seeded = SamplingSettings(n=N, temperature=1.0, max_tokens=MAX_TOKENS, seed=SEED)
    groups = engine.generate(PROMPTS, seeded)
    again = engine.generate(PROMPTS, seeded)
    # prompt 1 sample 2 alone, with the seed it had in the batch
    alone = engine.generate([PROMPTS[1]], SamplingSettings(n=1, temperature=1.0, max_tokens=MAX_TOKENS,
                                                           seed=sample_seed(SEED, 1, N, 2)))[0][0]
    flat = [(p, s) for p, g in zip(PROMPTS, groups) for s in g if s.token_ids]
    scores = engine.score([p for p, _ in flat], [list(s.token_ids) for _, s in flat])
    diffs = [abs(a - b) for (_, s), sc in zip(flat, scores) for a, b in zip(s.logprobs, sc)]
    greedy = engine.generate(PROMPTS, SamplingSettings(temperature=0.0, max_tokens=MAX_TOKENS))
    report = {"requested": requested, "runner_module": type(worker.model_runner).__module__,
              "use_v2_model_runner": bool(worker.use_v2_model_runner),
              "reproducible": groups == again, "batch_independent": alone.token_ids == groups[1][2].token_ids,
              "sample_vs_score_abs_diff_mean": sum(diffs) / len(diffs), "sample_vs_score_abs_diff_max": max(diffs),
              "samples": [[list(s.token_ids) for s in g] for g in groups],
              "sample_logprobs": [[list(s.logprobs) for s in g] for g in groups],
              "greedy": [list(g[0].token_ids) for g in greedy], "fixed_scores": engine.score(PROMPTS, FIXED)}
    out.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
