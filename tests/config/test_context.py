"""Every curriculum stage's input + output cap fits the model's positions (with model.yarn when set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_qwenlong.config import load_config

RECIPE = Path(__file__).resolve().parents[2] / "conf" / "qwenlong-l15" / "dapo-r1distill32b-3stage-4n8g-tp8cp4.yaml"


def test_a_stage_beyond_the_model_positions_names_the_stage_numbers_and_fix() -> None:
    # without YaRN R1-Distill-Qwen-32B has 131,072 positions; stage 3 needs 120,000 + 50,000 = 170,000
    with pytest.raises(ValueError) as err:
        load_config(RECIPE, ["model.yarn=null"])
    text = str(err.value)
    assert "curriculum.stages.2 (stage3-120k)" in text and "120000 + max_output_tokens 50000 = 170000" in text
    assert "131072 positions" in text and "model.yarn.factor >= 5.19" in text


def test_yarn_too_small_for_the_longest_stage_is_refused() -> None:
    with pytest.raises(ValueError, match=r"exceed the model's 163840 positions \(model.yarn: 5 × 32768\)"):
        load_config(RECIPE, ["model.yarn.factor=5"])


def test_the_tiny_model_without_yarn_is_not_checked() -> None:
    assert load_config(None, ["cluster.gpus_per_node=0"]).model.yarn is None  # the defaults stay valid
