"""model.yarn reaches both sides: the policy's config (megatron builds YaRN from it) and the rollout engine's
overrides and context, so trainer and engine positions agree beyond the original 32K."""

from __future__ import annotations

from nemo_qwenlong.config.training import YarnConfig
from nemo_qwenlong.loops.backend import engine_rope_overrides, training_hf_config

BASE = {"max_position_embeddings": 131072, "rope_theta": 1e6, "num_attention_heads": 40}


def test_no_yarn_keeps_the_checkpoint_config() -> None:
    assert training_hf_config(BASE, None) is BASE and engine_rope_overrides(BASE, None) is None


def test_yarn_sets_the_same_rope_and_context_on_both_sides() -> None:
    yarn = YarnConfig(factor=6.0, original_max_position_embeddings=32768)
    train = training_hf_config(BASE, yarn)
    engine = engine_rope_overrides(BASE, yarn)
    assert train["rope_scaling"]["rope_type"] == "yarn" and train["rope_scaling"]["factor"] == 6.0
    assert train["rope_scaling"]["original_max_position_embeddings"] == 32768 and train["rope_theta"] == 1e6
    assert engine["rope_parameters"] == {"rope_type": "yarn", "factor": 6.0, "rope_theta": 1e6,
                                         "original_max_position_embeddings": 32768}
    assert train["max_position_embeddings"] == engine["max_position_embeddings"] == 196608  # vLLM's max_model_len
    assert training_hf_config(train, yarn) == train  # a stage export that already carries it: unchanged
