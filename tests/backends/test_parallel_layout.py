"""The model's parallel sizes (config) must be the process groups' (data splitting)."""

from __future__ import annotations

import os

import pytest

from nemo_qwenlong.backends.megatron.parallel import check_layout_matches


def test_matching_layout_passes() -> None:
    check_layout_matches({"tensor_parallel": 8, "context_parallel": 4}, {"tensor_parallel": 8, "context_parallel": 4})


def test_mismatch_names_both_sizes() -> None:
    with pytest.raises(ValueError, match=r"parallelism.context_parallel=4 but the initialised process groups have "
                                         r"context_parallel=2") as err:
        check_layout_matches({"tensor_parallel": 8, "context_parallel": 4},
                             {"tensor_parallel": 8, "context_parallel": 2})
    assert "parallelism.tensor_parallel" not in str(err.value)  # only the size that differs is named


def test_policy_refuses_a_config_the_groups_do_not_have() -> None:
    """In one gloo process megatron's groups are TP=1; a TP=2 config used to build a half-width
    model and split nothing."""
    from nemo_qwenlong.backends.hf.tiny import tiny_qwen2_config
    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig, TinyArch

    import torch.distributed as dist

    from nemo_qwenlong.backends.megatron.parallel import destroy_parallel

    ours = not dist.is_initialized()  # leave a group another test (the vLLM engine) set up in place
    saved_env = dict(os.environ)  # init_parallel fills RANK/MASTER_PORT; later subprocesses must not inherit them
    init_parallel(tensor_parallel=1)
    try:
        par = ParallelismConfig(tensor_parallel=2, sequence_parallel=False, transformer_impl="local",
                                distributed_optimizer=False, dist_backend="gloo")
        with pytest.raises(ValueError, match=r"parallelism.tensor_parallel=2 but .* tensor_parallel=1"):
            MegatronPolicy(tiny_qwen2_config(TinyArch(), 512, 1).to_dict(), par, OptimConfig(), dtype="float32")
    finally:
        if ours:
            destroy_parallel()
            os.environ.clear()
            os.environ.update(saved_env)
