"""Loaders: round trips, every validation error path, skip_invalid reporting, eval layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nemo_qwenlong.data.loaders import (
    load_docqa_parquet,
    load_eval,
    load_items,
    load_jsonl,
    validate_docqa_rows,
    write_docqa_parquet,
)
from nemo_qwenlong.data.schema import DataValidationError
from nemo_qwenlong.data.synth import synth_items


def _good_row(i: int = 0, **changes) -> dict:
    row = {
        "data_source": "musique_0_20000",
        "prompt": [{"role": "user", "content": f"Please read...\n\n<text>\nDoc {i}\n</text>\n\nWho?\n\nFormat your response as follows: x"}],
        "ability": "doc-qa",
        "reward_model": {"style": "rule", "ground_truth": "the answer is Paris"},
        "extra_info": {"index": i},
    }
    row.update(changes)
    return row


def _write_rows(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_synthetic_round_trip(tmp_path: Path) -> None:
    items = list(synth_items(12, min_tokens=50, max_tokens=300, seed=5))
    path = write_docqa_parquet(items, tmp_path / "train.parquet")
    loaded, report = load_docqa_parquet(path)
    assert loaded == items and report.rows == 12 and report.skipped == 0
    assert load_items(path, "docqa_parquet")[0] == items


def test_released_layout_row_loads_with_question_cut_from_prompt(tmp_path: Path) -> None:
    [item], _ = load_docqa_parquet(_write_rows(tmp_path / "r.parquet", [_good_row(7)]))
    assert item.item_id == "musique_0_20000_7" and item.kind == "qa" and item.question == "Who?"
    assert item.ground_truth == "the answer is Paris"


@pytest.mark.parametrize(
    "changes, field, reason",
    [
        ({"prompt": []}, "prompt", "empty list (expected at least one chat message"),
        ({"prompt": [{"role": "user"}]}, "prompt[0]", "{role: str, content: str}"),
        ({"prompt": [{"role": "system", "content": "x"}]}, "prompt", "no non-empty user message"),
        ({"prompt": [{"role": "user", "content": "<text>\n  \n</text> q"}]}, "prompt", "empty document"),
        ({"data_source": "poetry_0_20000"}, "data_source", "unknown data_source"),
        ({"reward_model": {"style": "rule", "ground_truth": ""}}, "reward_model.ground_truth", "empty"),
        ({"reward_model": {"style": "rule"}}, "reward_model.ground_truth", "missing"),
        ({"extra_info": {"split": "train"}}, "extra_info.index", "missing"),
    ],
)
def test_each_bad_row_is_reported_with_file_row_field_reason(tmp_path: Path, changes, field, reason) -> None:
    rows = [_good_row(0), {**_good_row(1), **changes}, _good_row(2)]
    path = _write_rows(tmp_path / "bad.parquet", rows)
    with pytest.raises(DataValidationError) as err:
        load_docqa_parquet(path)
    [error] = err.value.errors
    assert (error.row, error.field) == (1, field) and reason in error.reason
    assert f"{path}:1: {field}:" in str(err.value) and "data.skip_invalid=true" in str(err.value)
    items, report = load_docqa_parquet(path, skip_invalid=True)
    assert [i.item_id for i in items] == ["musique_0_20000_0", "musique_0_20000_2"]
    assert report.skipped == 1 and report.rows == 3 and report.loaded == 2


@pytest.mark.parametrize(
    "changes, field, reason",
    [({"data_source": 3}, "data_source", "non-empty string"), ({"reward_model": "x"}, "reward_model", "expected an object"),
     ({"prompt": "just text"}, "prompt", "non-empty list")],
)
def test_type_errors_in_rows_from_any_reader(changes, field, reason) -> None:
    # columns of mixed types cannot be written to parquet, but JSON or `datasets` rows can carry them
    with pytest.raises(DataValidationError) as err:
        validate_docqa_rows([_good_row(0), {**_good_row(1), **changes}], "rows.json")
    [error] = err.value.errors
    assert (error.file, error.row, error.field) == ("rows.json", 1, field) and reason in error.reason
    assert str(error).startswith(f"rows.json:1: {field}:")
    _, report = validate_docqa_rows([5], "rows.json", skip_invalid=True)
    assert report.errors[0].field == "(row)" and "expected an object" in report.errors[0].reason


def test_duplicate_ids_and_full_error_list(tmp_path: Path) -> None:
    rows = [_good_row(0), _good_row(0), {**_good_row(2), "data_source": "x"}]
    with pytest.raises(DataValidationError) as err:
        load_docqa_parquet(_write_rows(tmp_path / "d.parquet", rows))
    assert [(e.row, e.field) for e in err.value.errors] == [(1, "id"), (2, "data_source")]


def test_jsonl_layout_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    rows = [
        {"id": "a", "document": "Doc text.", "question": "Who?", "answers": ["Paris", "paris city"], "type": "qa"},
        {"id": "b", "document": "Doc.", "question": "How much?", "answers": "12.5", "type": "math"},
        {"id": "c", "document": "Doc.", "question": "Which?", "answers": "b", "type": "choice"},
        {"id": "d", "document": "", "question": "Who?", "answers": ["x"], "type": "qa"},
        {"id": "e", "document": "Doc.", "question": "Who?", "answers": [], "type": "qa"},
        {"id": "f", "document": "Doc.", "question": "Who?", "answers": "Z", "type": "choice"},
        {"id": "g", "document": "Doc.", "question": "Who?", "answers": "x", "type": "essay"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    with pytest.raises(DataValidationError) as err:
        load_jsonl(path)
    # row numbers are the file's 1-based line numbers
    assert [(e.row, e.field) for e in err.value.errors] == [(4, "document"), (5, "answers"), (6, "answers"), (7, "type"), (8, "(row)")]
    items, report = load_jsonl(path, skip_invalid=True)
    assert [i.kind for i in items] == ["qa", "math", "choice"] and report.skipped == 5
    assert items[0].ground_truth == "Therefore, the answer is Paris." and items[0].answers == ("Paris", "paris city")
    assert items[2].ground_truth == "The correct answer is (B)"
    assert items[2].messages[0]["content"].endswith('"The correct answer is (insert answer here)".')


def test_eval_layouts_via_datasets(tmp_path: Path) -> None:
    docmath = tmp_path / "docmath.jsonl"
    docmath.write_text(json.dumps({"question_id": "q1", "question": "Total?", "paragraphs": ["A is 2.", "B is 3."],
                                   "ground_truth": 5}) + "\n")
    [dm], _ = load_eval(docmath, "docmath")
    assert dm.kind == "math" and dm.ground_truth == "Therefore, the answer is 5." and "A is 2.\nB is 3." in dm.prompt_text
    frames = tmp_path / "frames.jsonl"
    frames.write_text(json.dumps({"Prompt": "Who?", "Answer": "Ada", "wiki_items": [{"title": "T", "text": "Body"}]}) + "\n")
    [fr], _ = load_eval(frames, "frames")
    assert fr.data_source == "frames" and "T\nBody" in fr.prompt_text and fr.ground_truth == "Ada"
    leval = Path(__file__).resolve().parents[3] / "shared" / "data" / "leval" / "leval_first_q_per_doc_longbench_format.jsonl"
    items, report = load_eval(leval, "longbench", name="leval")
    assert report.rows == 98 and len(items) == 98 and all(i.kind == "qa" for i in items)
    bad = tmp_path / "lb.jsonl"
    bad.write_text(json.dumps({"context": "c", "input": "q", "answers": []}) + "\n")
    with pytest.raises(DataValidationError, match="answers"):
        load_eval(bad, "longbench", name="hotpotqa")
