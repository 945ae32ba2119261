#!/usr/bin/env bash
# Every GPU check in one prepared run, inside the GPU image (Dockerfile: tests/ and benchmarks/ are in
# /opt/nemo_qwenlong): the gpu-marked tests, each path in its own torchrun launch, a JUnit report under
# ${OUT:-.}/gpu-junit.xml. Two GPUs run everything; one GPU skips CP, SP, the resharding checkpoint and
# the two-replica engine test (they say so). PY defaults to the image's interpreter, /opt/venv/bin/python
# (docs/getting-started.md "First GPU checks").
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-/opt/venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv || true
"$PY" -c "import transformer_engine.pytorch, vllm, megatron.core; print('TE', transformer_engine.__version__, 'vLLM', vllm.__version__)"
timeout "${GPU_CHECKS_TIMEOUT:-1500}" "$PY" -m pytest -m gpu -rA --junitxml="${OUT:-.}/gpu-junit.xml" \
    tests/backends/test_megatron_gpu.py tests/rollout/test_vllm_gpu.py tests/rollout/test_vllm_runners_gpu.py \
    tests/rollout/test_refit_tp.py "$@"
