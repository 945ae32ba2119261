"""Data edge cases: empty inputs, structural vs row problems, JSONL line numbers, confined outputs,
synth length bounds, unreadable files (named errors, no tracebacks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_qwenlong.data.loaders import load_docqa_parquet, load_jsonl, write_docqa_parquet
from nemo_qwenlong.data.schema import EmptyDataError
from nemo_qwenlong.data.synth import TOKENS_PER_WORD, synth_items
from tests.cli.helpers_cli import assert_named_error, cli


@pytest.fixture()
def parquet(tmp_path: Path) -> Path:
    return write_docqa_parquet(list(synth_items(4, min_tokens=100, max_tokens=150, seed=1)), tmp_path / "ok.parquet")


def test_empty_files_are_an_error_for_loaders_and_a_warning_exit_1_for_validate(tmp_path: Path, parquet: Path) -> None:
    import pyarrow.parquet as pq

    zero_rows = tmp_path / "zero.parquet"
    pq.write_table(pq.read_table(parquet).slice(0, 0), zero_rows)
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    for path, load in ((zero_rows, load_docqa_parquet), (blank, load_jsonl)):
        with pytest.raises(EmptyDataError, match="no rows"):
            load(path)
        code, out, err = cli("data", "validate", str(path))
        assert code == 1 and "all valid" not in out and "no rows" in err and "Traceback" not in err


@pytest.mark.parametrize("content", [b"", b"not parquet at all"])
def test_validate_an_unreadable_parquet_is_a_named_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(content)
    assert_named_error(cli("data", "validate", str(bad)), "data validate error:", str(bad), "not a readable parquet")


def test_validate_with_a_format_that_does_not_match_or_a_missing_tokenizer(tmp_path: Path, parquet: Path) -> None:
    assert_named_error(cli("data", "validate", str(parquet), "--format", "jsonl"), str(parquet), "not a UTF-8 text file")
    assert_named_error(cli("data", "validate", str(parquet), "--format", "docmath"), str(parquet), "docmath")
    assert_named_error(cli("data", "validate", str(parquet), "--tokenizer", str(tmp_path / "nowhere")),
                       "--tokenizer", "nowhere")


def test_a_missing_column_is_reported_once_for_the_file(tmp_path: Path, parquet: Path) -> None:
    import pyarrow.parquet as pq

    no_col = tmp_path / "nocol.parquet"
    pq.write_table(pq.read_table(parquet).drop(["reward_model"]), no_col)
    code, _, err = cli("data", "validate", str(no_col))
    assert code == 2 and err.count("reward_model") <= 2 and "NoneType" not in err and "column(s) ['reward_model']" in err


def test_row_problems_say_what_is_wrong_and_jsonl_rows_are_file_lines(tmp_path: Path, parquet: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(parquet).to_pylist()
    rows[1]["prompt"] = []
    empty_prompt = tmp_path / "empty_prompt.parquet"
    pq.write_table(pa.Table.from_pylist(rows), empty_prompt)
    _, report = load_docqa_parquet(empty_prompt, skip_invalid=True)
    assert [str(e) for e in report.errors] == [f"{empty_prompt}:1: prompt: empty list (expected at least one chat "
                                               "message {role, content})"]
    good = json.dumps({"document": "d", "question": "q?", "answers": "a"})
    jsonl = tmp_path / "gaps.jsonl"
    jsonl.write_text(f"{good}\n\n\n{json.dumps({'document': '', 'question': 'q?', 'answers': 'a'})}\n{{oops\n")
    _, report = load_jsonl(jsonl, skip_invalid=True)
    assert [(e.row, e.field) for e in report.errors] == [(4, "document"), (5, "(row)")]


def test_synth_output_stays_inside_out_and_bad_counts_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_named_error(cli("data", "synth", "--out", str(out), "--n", "2", "--min-tokens", "100", "--max-tokens", "200",
                           "--split", "../../x"), "--split")
    for n in ("-5", "0"):
        assert_named_error(cli("data", "synth", "--out", str(out), "--n", n, "--min-tokens", "100",
                               "--max-tokens", "200"), "--n", "must be >= 1")
    assert_named_error(cli("data", "synth", "--out", str(out), "--n", "2", "--min-tokens", "300", "--max-tokens", "200"),
                       "--min-tokens 300", "--max-tokens 200")
    assert_named_error(cli("data", "synth", "--out", str(out), "--n", "2", "--min-tokens", "1", "--max-tokens", "2"),
                       "max_tokens=2", ">= 80")
    assert not out.exists() and not (tmp_path / "x.parquet").exists()


def test_synth_documents_honour_the_length_bounds() -> None:
    from nemo_qwenlong.data.prompt import document_from_prompt

    for lo, hi in ((80, 90), (100, 100), (300, 400)):
        for item in synth_items(8, min_tokens=lo, max_tokens=hi, seed=2):
            tokens = len(document_from_prompt(item.messages[0]["content"]).split()) * TOKENS_PER_WORD
            assert lo - TOKENS_PER_WORD <= tokens <= hi, (lo, hi, tokens)
