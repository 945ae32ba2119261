"""`nemo-qwenlong data synth` and `data validate` through the installed console script."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from nemo_qwenlong.data.loaders import load_docqa_parquet


def _run(exe: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def test_synth_then_validate_clean(cli_exe: str, tmp_path: Path) -> None:
    out = _run(cli_exe, "data", "synth", "--out", str(tmp_path), "--n", "16", "--min-tokens", "100",
               "--max-tokens", "2500", "--seed", "2")
    assert out.returncode == 0, out.stderr
    items, _ = load_docqa_parquet(tmp_path / "train.parquet")
    assert len(items) == 16 and {i.kind for i in items} == {"qa", "math", "choice"}
    check = _run(cli_exe, "data", "validate", str(tmp_path / "train.parquet"))
    assert check.returncode == 0, check.stderr
    assert "16 rows, all valid" in check.stdout and "kind choice" in check.stdout
    assert "length histogram" in check.stdout and "0K-2K" in check.stdout


def test_validate_with_tokenizer_caches_lengths(cli_exe: str, tmp_path: Path) -> None:
    from nemo_qwenlong.backends.hf.tiny import build_tiny_tokenizer

    build_tiny_tokenizer(tmp_path / "tok")
    _run(cli_exe, "data", "synth", "--out", str(tmp_path), "--n", "4", "--min-tokens", "50", "--max-tokens", "200")
    check = _run(cli_exe, "data", "validate", str(tmp_path / "train.parquet"), "--tokenizer", str(tmp_path / "tok"))
    assert check.returncode == 0, check.stderr
    assert "templated prompt tokens" in check.stdout
    assert (tmp_path / "train.parquet.lengths.json").exists()


def test_validate_lists_every_bad_row_and_fails(cli_exe: str, tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    rows = [{"document": "d", "question": "q", "answers": ["a"], "type": "qa"},
            {"document": "", "question": "q", "answers": ["a"], "type": "qa"},
            {"document": "d", "question": "q", "answers": ["a"], "type": "poem"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    check = _run(cli_exe, "data", "validate", str(path))
    assert check.returncode == 1
    lines = check.stderr.strip().splitlines()
    assert lines[0] == f"{path}:2: document: empty"  # the file's 1-based line numbers
    assert lines[1].startswith(f"{path}:3: type: 'poem' is not one of")
    assert lines[-1] == "2 of 3 rows invalid"
    assert _run(cli_exe, "data", "validate", str(tmp_path / "missing.parquet")).returncode == 2
