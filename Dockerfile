# nemo_qwenlong GPU image for H100/H200 Slurm clusters (pyxis/enroot can import it).
#
# NOT built here: the development machines have no Docker engine and no GPU. The first GPU session
# must build it, run `pytest -m gpu`, and freeze requirements/gpu.txt (see docs/dependencies.md).
#
# Why this base: vLLM 0.33 (CUDA) needs torch 2.14.0. NGC's PyTorch images carry their own torch
# build, and Transformer Engine in them is compiled against it, so installing vLLM on top would
# mix ABIs. Instead we start from NGC's CUDA + cuDNN devel image, install torch 2.14.0, and build
# Transformer Engine against that exact torch.
ARG BASE_IMAGE=nvcr.io/nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.12 python3.12-venv python3.12-dev git build-essential ninja-build libnccl-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv

WORKDIR /opt/nemo_qwenlong
COPY requirements/gpu.txt requirements/gpu.txt
# torch first, so vLLM and TE build against the pinned CUDA build; PIP_CONSTRAINT keeps the
# pins inside isolated build environments too (shared/docs/megatron-on-cpu.md §4.7).
RUN pip install torch==2.14.0 \
    && PIP_CONSTRAINT=requirements/gpu.txt pip install -r requirements/gpu.txt \
    && NVTE_FRAMEWORK=pytorch pip install --no-build-isolation "transformer_engine[pytorch]==2.20.2"

COPY pyproject.toml README.md ./
COPY nemo_qwenlong nemo_qwenlong
COPY conf conf
RUN pip install --no-deps -e .

# Smoke check at build time: the package imports and TE is importable.
RUN python -c "import nemo_qwenlong, transformer_engine, megatron.core, vllm; print('ok')"
ENTRYPOINT ["nemo-qwenlong"]
