"""The convert CLI and the converters/ scripts: a real conversion each way, and a bad input exits 2 with a message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd)


def test_cli_converts_both_ways_and_reports(cli_exe: str, tiny_hf: dict, tmp_path: Path, repo_root: Path) -> None:
    imp = run([cli_exe, "convert", "hf-to-megatron", "--hf", str(tiny_hf["tied"]), "--out", str(tmp_path / "mg"), "--tp", "2"])
    assert imp.returncode == 0, imp.stderr[-2000:]
    assert "wrote" in imp.stdout and "16 tensors" in imp.stdout and "peak RSS" in imp.stdout
    script = repo_root / "converters" / "megatron_to_hf.py"
    exp = run([sys.executable, str(script), "--megatron", str(tmp_path / "mg"), "--out", str(tmp_path / "hf"),
               "--yarn-factor", "2", "--dtype", "float32"])
    assert exp.returncode == 0, exp.stderr[-2000:]
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["rope_parameters"]["factor"] == 2.0 and cfg["max_position_embeddings"] == 65536
    assert "UserWarning" not in exp.stderr  # library noise is filtered


def test_cli_bad_input_exits_2_with_the_reason(cli_exe: str, tiny_hf: dict, tmp_path: Path) -> None:
    bad = run([cli_exe, "convert", "hf-to-megatron", "--hf", str(tiny_hf["untied"]), "--out", str(tmp_path / "x"), "--tp", "3"])
    assert bad.returncode == 2
    assert "convert hf-to-megatron error: num_key_value_heads=2 is not divisible by the requested tp=3" in bad.stderr
    missing = run([cli_exe, "convert", "megatron-to-hf", "--megatron", str(tmp_path / "nope"), "--out", str(tmp_path / "y")])
    assert missing.returncode == 2 and "no complete nemo_qwenlong Megatron checkpoint" in missing.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_library_call_works_from_a_script_without_a_main_guard(tiny_hf: dict, tmp_path: Path) -> None:
    """megatron-core's save would spawn a Manager process that re-runs an unguarded script; ours does not."""
    script = tmp_path / "convert_me.py"
    script.write_text(
        "from nemo_qwenlong.backends.megatron.convert import hf_to_megatron_checkpoint\n"
        f"print(hf_to_megatron_checkpoint({str(tiny_hf['tied'])!r}, {str(tmp_path / 'mg')!r}).line())\n"
    )
    out = run([sys.executable, str(script)])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("wrote") == 1 and (tmp_path / "mg" / "iter_0000000" / "nql_manifest.json").is_file()


def test_a_killed_conversion_leaves_no_output_and_the_next_run_cleans_up(cli_exe: str, tiny_hf: dict, tmp_path: Path) -> None:
    import os
    import signal
    import time

    out = tmp_path / "mg"
    proc = subprocess.Popen([cli_exe, "convert", "hf-to-megatron", "--hf", str(tiny_hf["untied"]), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".mg.partial-*/iter_0000000")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # mid-conversion: the partial folder exists, the output does not
    proc.wait()
    assert not out.exists()
    partials = list(tmp_path.glob(".mg.partial-*"))
    assert partials, "the kill came before the conversion started writing"
    again = run([cli_exe, "convert", "hf-to-megatron", "--hf", str(tiny_hf["untied"]), "--out", str(out)])
    assert again.returncode == 0, again.stderr[-2000:]
    assert "interrupted conversion" in again.stderr
    assert (out / "iter_0000000" / "nql_manifest.json").is_file() and not list(tmp_path.glob(".mg.partial-*"))
