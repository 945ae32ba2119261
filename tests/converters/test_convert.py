"""HF ⇄ Megatron converters on tiny Qwen2 folders: bit-exact round trips at TP=1/TP=2, the Megatron-Bridge
layout, rope-field layouts and YaRN, transformers loading, and every bad-input path (nothing half-written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, Qwen2Config

from nemo_qwenlong.backends.hf.checkpoint import CheckpointFormatError
from nemo_qwenlong.backends.megatron import convert
from nemo_qwenlong.backends.megatron.convert import hf_to_megatron_checkpoint, megatron_to_hf_checkpoint


def hf_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in folder.glob("*.safetensors"):
        out |= load_file(f)
    return out


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name]


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("kind", ["untied", "tied", "padded"])
def test_round_trip_is_bit_exact(tiny_hf: dict, tmp_path: Path, kind: str, tp: int) -> None:
    src = tiny_hf[kind]
    report = hf_to_megatron_checkpoint(src, tmp_path / "mg", tp=tp)
    assert report.tensors == (16 if kind == "tied" else 17)  # embedding, 7 per layer × 2, final norm (+ output)
    manifest = json.loads((tmp_path / "mg" / "iter_0000000" / "nql_manifest.json").read_text())
    assert manifest["padded_vocab_size"] == (512 if kind == "padded" and tp == 2 else manifest["hf_config"]["vocab_size"])
    megatron_to_hf_checkpoint(tmp_path / "mg", tmp_path / "hf", dtype=None)
    original, back = hf_tensors(src), hf_tensors(tmp_path / "hf")
    assert sorted(original) == sorted(back)  # tied: no lm_head.weight on either side
    for name, tensor in original.items():
        assert torch.equal(tensor, back[name]), name
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(back)
    assert not leftovers(tmp_path)


def test_megatron_side_has_the_bridge_layout(tiny_hf: dict, tmp_path: Path) -> None:
    hf_to_megatron_checkpoint(tiny_hf["untied"], tmp_path / "mg", tp=2, pp=2)
    root, it = tmp_path / "mg", tmp_path / "mg" / "iter_0000000"
    assert (root / "latest_checkpointed_iteration.txt").read_text() == "0"
    assert torch.load(root / "latest_train_state.pt", weights_only=True)["step"] == 0
    assert {".metadata", "metadata.json", "run_config.yaml", "nql_manifest.json", "train_state.pt"} <= {
        p.name for p in it.iterdir()}
    assert json.loads((it / "metadata.json").read_text())["sharded_backend"] == "torch_dist"
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in (it / "tokenizer").iterdir()}
    model = yaml.safe_load((it / "run_config.yaml").read_text())["model"]
    assert model["_target_"] == "megatron.bridge.models.gpt_provider.GPTModelProvider"
    assert (model["num_layers"], model["num_query_groups"], model["tensor_model_parallel_size"],
            model["pipeline_model_parallel_size"]) == (2, 2, 2, 2)
    from megatron.core import dist_checkpointing

    from nemo_qwenlong.backends.megatron.parallel import single_process_group

    with single_process_group():
        keys = set(dist_checkpointing.load_tensors_metadata(str(it)))
    # Transformer-Engine-spec names, layers stacked on a leading axis, as megatron-core writes them
    assert "decoder.layers.self_attention.linear_qkv.layer_norm_weight" in keys
    assert "decoder.layers.mlp.linear_fc1.layer_norm_weight" in keys
    assert "decoder.layers.input_layernorm.weight" not in keys
    assert {"embedding.word_embeddings.weight", "output_layer.weight", "decoder.final_layernorm.weight"} <= keys


def test_export_loads_in_transformers_with_the_same_greedy_tokens(tiny_hf: dict, tmp_path: Path) -> None:
    src = tiny_hf["untied"]
    hf_to_megatron_checkpoint(src, tmp_path / "mg", tp=2)
    megatron_to_hf_checkpoint(tmp_path / "mg", tmp_path / "hf", dtype="float32")
    prompt = torch.tensor([[5, 17, 99, 3, 250, 41]])
    ref = AutoModelForCausalLM.from_pretrained(src).eval()
    got = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(ref.generate(prompt, **kw), got.generate(prompt, **kw))
    assert (tmp_path / "hf" / "generation_config.json").is_file() and (tmp_path / "hf" / "tokenizer.json").is_file()


def test_yarn_on_export_in_both_rope_layouts(tiny_hf: dict, tmp_path: Path) -> None:
    hf_to_megatron_checkpoint(tiny_hf["untied"], tmp_path / "mg")
    megatron_to_hf_checkpoint(tmp_path / "mg", tmp_path / "hf", yarn_factor=4, yarn_original_max=32768)
    raw = json.loads((tmp_path / "hf" / "config.json").read_text())
    # transformers 4.x layout
    assert raw["rope_theta"] == 1_000_000.0
    assert raw["rope_scaling"]["rope_type"] == "yarn" and raw["rope_scaling"]["type"] == "yarn"
    assert raw["rope_scaling"]["factor"] == 4.0 and raw["rope_scaling"]["original_max_position_embeddings"] == 32768
    # transformers 5.x layout, read back by the installed transformers
    assert raw["rope_parameters"]["rope_theta"] == 1_000_000.0
    loaded = Qwen2Config.from_pretrained(tmp_path / "hf")
    assert loaded.rope_parameters["rope_type"] == "yarn" and loaded.rope_parameters["factor"] == 4.0
    assert loaded.max_position_embeddings == 131072  # vLLM serves only this many positions
    assert raw["dtype"] == raw["torch_dtype"] == "float32"  # the checkpoint's dtype: no --dtype given


def test_import_strips_rope_scaling_unless_asked(tiny_hf: dict, tmp_path: Path) -> None:
    src = tmp_path / "yarn_src"
    shutil.copytree(tiny_hf["tied"], src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768,
                              "rope_theta": 1_000_000.0}
    (src / "config.json").write_text(json.dumps(cfg))
    hf_to_megatron_checkpoint(src, tmp_path / "plain")
    kept = hf_to_megatron_checkpoint(src, tmp_path / "kept", keep_rope_scaling=True)
    plain_cfg = json.loads((tmp_path / "plain" / "iter_0000000" / "nql_manifest.json").read_text())["hf_config"]
    kept_cfg = json.loads((kept.out / "iter_0000000" / "nql_manifest.json").read_text())["hf_config"]
    assert plain_cfg["rope_scaling"] is None and plain_cfg["rope_parameters"] == {"rope_type": "default", "rope_theta": 1e6}
    assert kept_cfg["rope_parameters"]["rope_type"] == "yarn"


def _broken(tiny_hf: dict, tmp_path: Path, how: str) -> Path:
    src = tmp_path / f"src_{how}"
    shutil.copytree(tiny_hf["untied"], src)
    index_path = src / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shards = sorted(set(index["weight_map"].values()))
    cfg = json.loads((src / "config.json").read_text())
    if how == "missing_shard":
        (src / shards[-1]).unlink()
    elif how == "extra_shard":
        shutil.copy(src / shards[0], src / "model-99999-of-99999.safetensors")
    elif how == "missing_tensor":  # a norm shares its shard with other tensors: only the index entry goes
        index["weight_map"].pop("model.layers.1.input_layernorm.weight")
        index_path.write_text(json.dumps(index))
    elif how == "shape":
        cfg["intermediate_size"] = 320
    elif how == "architecture":
        cfg["model_type"], cfg["architectures"] = "llama", ["LlamaForCausalLM"]
    (src / "config.json").write_text(json.dumps(cfg))
    return src


@pytest.mark.parametrize(("how", "message"), [
    ("missing_shard", "names shard files that are missing"),
    ("extra_shard", "shard files the index does not name"),
    ("missing_tensor", "tensors missing for the config: ['model.layers.1.input_layernorm.weight']"),
    ("shape", "model.layers.0.mlp.gate_proj.weight has shape [256, 128], the config implies [320, 128]"),
    ("architecture", "only Qwen2"),
])
def test_bad_hf_inputs_are_named_and_nothing_is_written(tiny_hf: dict, tmp_path: Path, how: str, message: str) -> None:
    src = _broken(tiny_hf, tmp_path, how)
    with pytest.raises(CheckpointFormatError) as err:
        hf_to_megatron_checkpoint(src, tmp_path / "out")
    assert message in str(err.value)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_layout_and_output_errors(tiny_hf: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_key_value_heads=2 is not divisible by the requested tp=4"):
        hf_to_megatron_checkpoint(tiny_hf["untied"], tmp_path / "out", tp=4)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="exists and is not an empty folder"):
        hf_to_megatron_checkpoint(tiny_hf["untied"], tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "user data"
    with pytest.raises(CheckpointFormatError, match="no complete nemo_qwenlong Megatron checkpoint"):
        megatron_to_hf_checkpoint(tiny_hf["untied"], tmp_path / "hf")
    assert not (tmp_path / "out").exists() and not (tmp_path / "hf").exists() and not leftovers(tmp_path)


def test_a_conversion_that_dies_midway_leaves_nothing(tiny_hf: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = convert.save_groups

    def dying(groups, out_dir):  # noqa: ANN001
        def first_two():
            for k, g in enumerate(groups):
                if k == 2:
                    raise OSError("disk full (injected)")
                yield g
        return real(first_two(), out_dir)

    monkeypatch.setattr(convert, "save_groups", dying)
    with pytest.raises(OSError, match="injected"):
        hf_to_megatron_checkpoint(tiny_hf["untied"], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


@pytest.mark.slow
def test_export_serves_in_vllm_with_yarn_and_the_same_greedy_tokens(tiny_hf: dict, tmp_path: Path) -> None:
    import subprocess
    import sys

    hf_to_megatron_checkpoint(tiny_hf["untied"], tmp_path / "mg", tp=2)
    megatron_to_hf_checkpoint(tmp_path / "mg", tmp_path / "plain", dtype="float32")
    megatron_to_hf_checkpoint(tmp_path / "mg", tmp_path / "yarn", yarn_factor=4, yarn_original_max=32768)
    worker = Path(__file__).with_name("vllm_load_worker.py")
    proc = subprocess.run([sys.executable, str(worker), str(tmp_path / "plain"), str(tmp_path / "yarn")],
                          capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("VLLM ")]
    assert proc.returncode == 0 and lines, (proc.stdout[-2000:], proc.stderr[-4000:])
    report = json.loads(lines[-1].removeprefix("VLLM "))
    model = AutoModelForCausalLM.from_pretrained(tiny_hf["untied"]).eval()
    for prompt, tokens in zip([[5, 17, 99, 3, 250, 41], [7, 7, 300, 12]], report["greedy"]):
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=0)
        assert ref[0, len(prompt):].tolist() == tokens
    assert report["yarn"]["max_model_len"] == 131072
    assert report["yarn"]["rope"]["rope_type"] == "yarn" and report["yarn"]["rope"]["factor"] == 4.0
