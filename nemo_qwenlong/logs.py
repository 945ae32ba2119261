"""Console hygiene shared by the command line and the library's long-running jobs (no heavy imports)."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_backends() -> None:
    """Silence the start-up chatter of megatron-core, torch DCP and vLLM (absent TE/Apex, deprecations,
    per-module INFO lines) so a command's own progress lines stay readable. Errors still show."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    for category in (UserWarning, FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(megatron|torch\.distributed|vllm)")
    logging.getLogger("megatron").setLevel(logging.ERROR)
