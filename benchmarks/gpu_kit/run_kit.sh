#!/usr/bin/env bash
# The GPU kit on a lent H100/H200 (no vLLM, no TE, no registry): install the carried wheels
# (benchmarks/gpu_kit/wheels/, fetched on the CPU machine by wheels.py) into /tmp/site, then run every
# step that needs neither TE nor vLLM (run_kit.py) and write ${OUT}/gpu_kit.json. Under 8 minutes.
#   bash benchmarks/gpu_kit/run_kit.sh [--dry-run] [--only STEP ...]
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${PY:-python3}
OUT=${OUT:-benchmarks/out}
if [[ "${1:-}" == "--dry-run" ]]; then
    echo "1. nvidia-smi and the torch version; 2. pip install --no-index --no-deps --target /tmp/site benchmarks/gpu_kit/wheels/*.whl"
    echo "3. import check of nemo_qwenlong.backends.megatron and the run path; 4. the steps:"
    exec "$PY" benchmarks/gpu_kit/run_kit.py --out "$OUT" "$@"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
shopt -s nullglob
wheels=(benchmarks/gpu_kit/wheels/*.whl)
if (( ${#wheels[@]} == 0 )); then
    echo "gpu kit error: no wheels in benchmarks/gpu_kit/wheels (run wheels.py fetch, and pass carry=['benchmarks/gpu_kit/wheels'])" >&2
    exit 2
fi
"$PY" -m pip install -q --no-index --no-deps --target /tmp/site "${wheels[@]}" || exit 2
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c "import megatron.core, pydantic, openai, psutil, transformers, nemo_qwenlong.backends.megatron.policy, nemo_qwenlong.cli.main, nemo_qwenlong.loops.rl; print('imports ok: megatron-core', megatron.core.__version__, 'pydantic', pydantic.VERSION, 'transformers', transformers.__version__)" || exit 2
mkdir -p "$OUT"
timeout 460 "$PY" benchmarks/gpu_kit/run_kit.py --out "$OUT" "$@"
