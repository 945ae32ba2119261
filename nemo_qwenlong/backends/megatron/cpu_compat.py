"""Every CPU workaround megatron-core 0.19.2 needs, in one place; applied only when there is no GPU.

Measured in shared/docs/megatron-on-cpu.md (§2 rows 2b-2f, 4a; §3). Each patch names the megatron
function that needs it. On a machine with CUDA `apply()` does nothing.
"""

from __future__ import annotations

import torch

_APPLIED = False


def apply() -> bool:
    """Patch torch.cuda entry points megatron-core calls unconditionally; returns True if patched."""
    global _APPLIED
    if torch.cuda.is_available():
        return False
    if not _APPLIED:
        # rotary_pos_embedding.RotaryEmbedding.get_emb moves inv_freq to torch.cuda.current_device();
        # tensor_parallel mappings allocate gather/scatter buffers there too.
        torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
        # dist_checkpointing/strategies/filesystem_async.py preload_tensors calls torch.cuda.synchronize().
        torch.cuda.synchronize = lambda *args, **kwargs: None  # type: ignore[assignment]
        _APPLIED = True
    return True


def seed_model_parallel(seed: int) -> None:
    """Seed megatron's RNG tracker. On CPU the tracker must be the inference one: the plain form calls
    torch.cuda.get_rng_state (tensor_parallel.random.CudaRNGStatesTracker.add)."""
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    torch.manual_seed(seed)
    model_parallel_cuda_manual_seed(seed, inference_rng_tracker=not torch.cuda.is_available())


def causal_mask(seq_len: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[1, 1, s, s] bool, True = masked. Passing None makes megatron build the mask on CUDA
    (transformer/utils.py get_default_causal_mask)."""
    return torch.triu(torch.ones(1, 1, seq_len, seq_len, dtype=torch.bool, device=device), diagonal=1)
