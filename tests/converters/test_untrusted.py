"""Untrusted and damaged checkpoints: no code runs, every bad input is a named error (exit 2), and
SIGTERM mid-conversion leaves no partial folder."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.helpers_cli import assert_named_error, cli

ITER = "iter_0000000"


@pytest.fixture(scope="module")
def megatron_ckpt(tiny_hf: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nemo_qwenlong.backends.megatron.convert import hf_to_megatron_checkpoint

    out = tmp_path_factory.mktemp("mg") / "ckpt"
    hf_to_megatron_checkpoint(tiny_hf["untied"], out)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class _Payload:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # noqa: ANN204 - what a crafted checkpoint does
        return (os.system, (f"touch {self.sentinel}",))


def test_a_pickle_payload_in_metadata_does_not_run(megatron_ckpt: Path, tmp_path: Path) -> None:
    evil = _copy(megatron_ckpt, tmp_path / "evil")
    sentinel = tmp_path / "sentinel"
    (evil / ITER / ".metadata").write_bytes(pickle.dumps(_Payload(sentinel)))
    result = cli("convert", "megatron-to-hf", "--megatron", str(evil), "--out", str(tmp_path / "out"))
    assert_named_error(result, str(evil / ITER / ".metadata"), "refused to unpickle global posix.system")
    assert not sentinel.exists() and not (tmp_path / "out").exists()


def test_the_allow_list_refuses_a_payload_in_a_sharded_object_and_in_common_pt(tmp_path: Path) -> None:
    import torch

    from nemo_qwenlong.backends.megatron.safe_load import UnsafeCheckpointError, install, load_weights_only

    install()
    sentinel = tmp_path / "sentinel"
    blob = tmp_path / "common.pt"
    torch.save({"x": _Payload(sentinel)}, blob)
    with pytest.raises(UnsafeCheckpointError, match=str(blob)):
        load_weights_only(str(blob), str(blob))
    from megatron.core.dist_checkpointing.strategies import common

    with pytest.raises(UnsafeCheckpointError, match="common.pt"):
        common.load_common(str(tmp_path))
    assert not sentinel.exists()


def test_a_real_checkpoint_still_loads_through_the_allow_list(megatron_ckpt: Path, tmp_path: Path) -> None:
    code, out, err = cli("convert", "megatron-to-hf", "--megatron", str(megatron_ckpt), "--out", str(tmp_path / "hf"),
                         "--dtype", "float32")
    assert code == 0, err[-2000:]
    assert (tmp_path / "hf" / "config.json").is_file()


def test_damaged_megatron_checkpoints_are_named_errors(megatron_ckpt: Path, tmp_path: Path) -> None:
    short = _copy(megatron_ckpt, tmp_path / "short")
    shard = sorted((short / ITER).glob("*.distcp"))[1]
    shard.write_bytes(shard.read_bytes()[:1000])
    assert_named_error(cli("convert", "megatron-to-hf", "--megatron", str(short), "--out", str(tmp_path / "o1")),
                       "shard files shorter than the metadata says", shard.name)
    garbled = _copy(megatron_ckpt, tmp_path / "garbled")
    shard = sorted((garbled / ITER).glob("*.distcp"))[1]
    data = bytearray(shard.read_bytes())
    data[-200:] = b"x" * 200  # the zip directory
    shard.write_bytes(bytes(data))
    assert_named_error(cli("convert", "megatron-to-hf", "--megatron", str(garbled), "--out", str(tmp_path / "o2")),
                       str(garbled / ITER), "cannot read the checkpoint")
    cut = _copy(megatron_ckpt, tmp_path / "cut")
    meta = cut / ITER / ".metadata"
    meta.write_bytes(meta.read_bytes()[:300])
    assert_named_error(cli("convert", "megatron-to-hf", "--megatron", str(cut), "--out", str(tmp_path / "o3")),
                       str(meta), "not a readable checkpoint metadata file")
    assert not any(tmp_path.glob("o*")) and not any(tmp_path.glob(".o*"))


def test_damaged_hf_folders_are_named_errors(tiny_hf: dict, tmp_path: Path) -> None:
    truncated = _copy(tiny_hf["untied"], tmp_path / "truncated")
    shard = sorted(truncated.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:5000])
    assert_named_error(cli("convert", "hf-to-megatron", "--hf", str(truncated), "--out", str(tmp_path / "o1")),
                       str(shard), "not a readable safetensors file")
    bad_json = _copy(tiny_hf["untied"], tmp_path / "badjson")
    (bad_json / "config.json").write_text("{not json")
    assert_named_error(cli("convert", "hf-to-megatron", "--hf", str(bad_json), "--out", str(tmp_path / "o2")),
                       str(bad_json / "config.json"), "not valid JSON")


def test_sigterm_mid_conversion_leaves_no_partial_folder(cli_exe: str, tiny_hf: dict, tmp_path: Path) -> None:
    out = tmp_path / "mg"
    proc = subprocess.Popen([cli_exe, "convert", "hf-to-megatron", "--hf", str(tiny_hf["untied"]), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".mg.partial-*/iter_0000000")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # what Slurm sends
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "stopped by signal 15" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".mg.partial-*"))
