"""Checkpoints Megatron-Bridge 0.6.2 reads (the run_config.yaml model section its own HF import writes)
and exports that keep the weights' dtype: default round trips bit-exact for fp32 and bf16 sources."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from nemo_qwenlong.backends.megatron.checkpoint import bridge_run_config
from nemo_qwenlong.backends.megatron.convert import hf_to_megatron_checkpoint, megatron_to_hf_checkpoint

# What Bridge's HF import writes for a Qwen2 beyond the sizes (measured with Bridge 0.6.2: with these
# its stock export_ckpt reads our checkpoint and writes HF tensors bit-identical to the original).
BRIDGE_FIXED = {
    "_target_": "megatron.bridge.models.gpt_provider.GPTModelProvider",
    "normalization": "RMSNorm", "gated_linear_unit": True, "add_qkv_bias": True, "add_bias_linear": False,
    "position_embedding_type": "rope", "activation_func": {"_target_": "torch.nn.functional.silu", "_call_": False},
    "hidden_dropout": 0.0, "attention_dropout": 0.0,
}


def hf_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in folder.glob("*.safetensors"):
        out |= load_file(f)
    return out


def run_config_model(root: Path) -> dict:
    return yaml.safe_load((root / "iter_0000000" / "run_config.yaml").read_text())["model"]


def manifest(root: Path) -> dict:
    return json.loads((root / "iter_0000000" / "nql_manifest.json").read_text())


@pytest.fixture(scope="module")
def bf16_hf(tiny_hf: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untied tiny model stored in bf16 (same shards and index)."""
    folder = tmp_path_factory.mktemp("bf16") / "hf"
    shutil.copytree(tiny_hf["untied"], folder)
    for f in folder.glob("*.safetensors"):
        save_file({k: t.to(torch.bfloat16) for k, t in load_file(f).items()}, str(f), metadata={"format": "pt"})
    cfg = json.loads((folder / "config.json").read_text())
    cfg["torch_dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_run_config_has_the_fields_bridge_writes(tiny_hf: dict, tmp_path: Path) -> None:
    hf_to_megatron_checkpoint(tiny_hf["untied"], tmp_path / "mg", tp=2)
    model = run_config_model(tmp_path / "mg")
    assert {k: model[k] for k in BRIDGE_FIXED} == BRIDGE_FIXED
    hf = json.loads((tiny_hf["untied"] / "config.json").read_text())
    assert (model["num_layers"], model["hidden_size"], model["ffn_hidden_size"], model["num_attention_heads"],
            model["num_query_groups"], model["kv_channels"], model["vocab_size"]) == (
        hf["num_hidden_layers"], hf["hidden_size"], hf["intermediate_size"], hf["num_attention_heads"],
        hf["num_key_value_heads"], hf["hidden_size"] // hf["num_attention_heads"], hf["vocab_size"])
    assert model["rotary_base"] == 1_000_000.0 and model["layernorm_epsilon"] == hf["rms_norm_eps"]
    assert model["share_embeddings_and_output_weights"] is False and model["tensor_model_parallel_size"] == 2
    # the tiny source is fp32: bf16 off and params_dtype float32, like the stored weights
    assert (model["bf16"], model["fp16"]) == (False, False)
    assert model["params_dtype"] == {"_target_": "torch.float32", "_call_": False}
    assert not any(k.startswith("yarn_") for k in model)


def test_run_config_dtype_follows_the_stored_weights(tiny_hf: dict, bf16_hf: Path, tmp_path: Path) -> None:
    hf_to_megatron_checkpoint(tiny_hf["untied"], tmp_path / "cast", dtype="bfloat16")
    hf_to_megatron_checkpoint(bf16_hf, tmp_path / "bf16")
    for root in (tmp_path / "cast", tmp_path / "bf16"):
        model = run_config_model(root)
        assert model["bf16"] is True and model["params_dtype"] == {"_target_": "torch.bfloat16", "_call_": False}
        assert manifest(root)["dtype"] == "bfloat16"
    assert manifest(tmp_path / "cast")["source_dtype"] == "float32"  # recorded at import
    assert manifest(tmp_path / "bf16")["source_dtype"] == "bfloat16"


def test_yarn_checkpoint_writes_megatron_yarn_fields() -> None:
    hf = {"num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
          "num_key_value_heads": 2, "vocab_size": 512, "rope_theta": 1e6,
          "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
    model = yaml.safe_load(bridge_run_config(hf, {"tensor_parallel": 1}, "bfloat16"))["model"]
    assert model["position_embedding_type"] == "yarn"
    assert (model["yarn_rotary_scaling_factor"], model["yarn_original_max_position_embeddings"]) == (4.0, 32768)
    # HF's defaults: beta 32 / 1, attention factor 0.1·ln(4) + 1 (= mscale 1 over mscale_all_dim 0), truncate
    assert (model["yarn_beta_fast"], model["yarn_beta_slow"], model["yarn_mscale"], model["yarn_mscale_all_dim"],
            model["yarn_correction_range_round_to_int"]) == (32.0, 1.0, 1.0, 0.0, True)


@pytest.mark.parametrize("source", ["float32", "bfloat16"])
def test_default_export_keeps_the_dtype_bit_exact(tiny_hf: dict, bf16_hf: Path, tmp_path: Path, source: str) -> None:
    src = tiny_hf["untied"] if source == "float32" else bf16_hf
    hf_to_megatron_checkpoint(src, tmp_path / "mg", tp=2)
    report = megatron_to_hf_checkpoint(tmp_path / "mg", tmp_path / "hf")  # no dtype given
    assert f"weights {source} (the checkpoint's dtype)" in report.line()
    original, back = hf_tensors(src), hf_tensors(tmp_path / "hf")
    assert sorted(original) == sorted(back)
    for name, tensor in original.items():
        assert back[name].dtype == tensor.dtype and torch.equal(tensor, back[name]), name
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["torch_dtype"] == cfg["dtype"] == source


def test_requested_dtype_casts_and_says_so(tiny_hf: dict, tmp_path: Path) -> None:
    hf_to_megatron_checkpoint(tiny_hf["untied"], tmp_path / "mg")
    report = megatron_to_hf_checkpoint(tmp_path / "mg", tmp_path / "hf", dtype="bfloat16")
    assert "weights bfloat16 (--dtype)" in report.line()
    assert {t.dtype for t in hf_tensors(tmp_path / "hf").values()} == {torch.bfloat16}


def test_checkpoints_with_the_old_run_config_still_export(tiny_hf: dict, tmp_path: Path) -> None:
    """Checkpoints written before this layout (Qwen2ModelProvider, no dtype in the manifest) read as before."""
    hf_to_megatron_checkpoint(tiny_hf["tied"], tmp_path / "mg")
    it = tmp_path / "mg" / "iter_0000000"
    old = {"model": {"_target_": "megatron.bridge.models.qwen.qwen_provider.Qwen2ModelProvider", "num_layers": 2},
           "checkpoint": {"ckpt_format": "torch_dist"}}
    (it / "run_config.yaml").write_text(yaml.safe_dump(old))
    data = manifest(tmp_path / "mg")
    for key in ("dtype", "source_dtype"):
        data.pop(key)
    (it / "nql_manifest.json").write_text(json.dumps(data))
    report = megatron_to_hf_checkpoint(tmp_path / "mg", tmp_path / "hf")
    assert "weights float32 (the checkpoint's dtype)" in report.line()
    original, back = hf_tensors(tiny_hf["tied"]), hf_tensors(tmp_path / "hf")
    assert all(torch.equal(original[k], back[k]) for k in original)
