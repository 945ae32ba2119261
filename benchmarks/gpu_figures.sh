#!/usr/bin/env bash
# Issue 16's GPU figures in one prepared run (for a lent H100/H200; the GPU container's environment,
# requirements/gpu.txt). Each line prints JSON and writes benchmarks/out/*.json (copied to ${OUT}):
#   1. train-step tokens/s/GPU and MFU, Qwen2-7B width at 16K and 32K tokens, TE spec, bf16 then FP8
#      (8 layers: a full 7B with AdamW does not fit one GPU unsharded; MFU is per layer-FLOP anyway);
#   2. peak GPU memory of the fused log-probs at 60K tokens per rank (vocab 152,064 / TP 8, hidden 5120);
#   3. refit time of a Qwen2-7B-shaped model into vLLM and the engine/trainer log-prob agreement.
# Goals (docs/benchmarks.md): MFU >= 50 % bf16, FP8 >= 1.3x bf16; fused log-probs <= 2 GB; refit <= 2 s.
# PY defaults to the image's interpreter (/opt/venv/bin/python; benchmarks/ is in the image).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-/opt/venv/bin/python}
PEAK=${PEAK_TFLOPS:-989}  # dense bf16 peak per GPU (H100/H200 SXM: 989)
nvidia-smi --query-gpu=name,memory.total --format=csv || true
"$PY" benchmarks/bench_train_step.py --preset 7b-width --layers 8 --seq 16384 32768 --rows 1 --steps 3 --peak-tflops "$PEAK"
cp benchmarks/out/bench_train_step.json "${OUT:-benchmarks/out}/train_step_bf16.json" 2>/dev/null || true
"$PY" benchmarks/bench_train_step.py --preset 7b-width --layers 8 --seq 16384 32768 --rows 1 --steps 3 --peak-tflops "$PEAK" --fp8 tensorwise
cp benchmarks/out/bench_train_step.json "${OUT:-benchmarks/out}/train_step_fp8.json" 2>/dev/null || true
"$PY" benchmarks/bench_logprobs.py --device cuda --lengths 61440 --methods chunked fused --vocab 19008 --hidden 5120 --chunk 4096
cp benchmarks/out/bench_logprobs.json "${OUT:-benchmarks/out}/logprobs_gpu.json" 2>/dev/null || true
"$PY" benchmarks/bench_rollout.py --preset 7b --tensor-parallel 1
cp benchmarks/out/bench_rollout.json "${OUT:-benchmarks/out}/rollout_gpu.json" 2>/dev/null || true
