"""Loaders for DocQA-RL-1.6K (verl parquet), plain JSONL, and the evaluation layouts (DocMath, Frames,
LongBench via `datasets` from local files). Every row is validated; see `schema` for the policy.

DocQA-RL-1.6K row (released): `prompt` = chat messages, `data_source` (with a length-bucket suffix),
`reward_model.ground_truth` (an answer sentence), `extra_info.index`, optionally `ability`. Our writer
adds `extra_info.{id, input_question, answers}` (bare golds for F1); the released loader ignores them.
Plain JSONL row: `document`, `question`, `answers` (str or list), `type` (qa | math | choice), optional `id`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, Literal

from nemo_qwenlong.data.kind import route
from nemo_qwenlong.data.prompt import build_prompt, document_from_prompt, question_from_prompt
from nemo_qwenlong.data.schema import (
    DataError,
    DataValidationError,
    DocQAItem,
    EmptyDataError,
    LoadReport,
    RowError,
)
from nemo_qwenlong.fsio import atomic_write_parquet

EvalLayout = Literal["docmath", "frames", "longbench"]
RowParser = Callable[[dict[str, Any], int, str], DocQAItem]
NumberedRows = Iterable[tuple[int, Any]]  # (row number as reported: JSONL line number, parquet row index; row)
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "docqa_parquet": ("prompt", "data_source", "reward_model", "extra_info"),
    "docmath": ("paragraphs", "question", "ground_truth"),
    "frames": ("wiki_items", "Prompt", "Answer"),
    "longbench": ("context", "input", "answers"),
}


class _Bad(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = field, reason


def _text(row: dict[str, Any], key: str, where: str | None = None) -> str:
    value = row.get(key)
    name = where or key
    if value is None:
        raise _Bad(name, "missing")
    if not isinstance(value, str):
        raise _Bad(name, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise _Bad(name, "empty")
    return value


def _source(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Bad("data_source", f"expected a non-empty string, got {value!r}")
    try:
        route(value)
    except ValueError as exc:
        raise _Bad("data_source", str(exc)) from None
    return value


def _check_columns(columns: Iterable[str], layout: str, path: str) -> None:
    """A structural problem is reported once for the file, not once per row."""
    have = set(columns)
    missing = [c for c in REQUIRED_COLUMNS[layout] if c not in have]
    if missing and have:
        raise DataError(f"{path}: column(s) {missing} missing for the {layout} layout (the file has "
                        f"{sorted(have)}; {layout} needs {list(REQUIRED_COLUMNS[layout])})")


def _validated(rows: NumberedRows, path: str, parse: RowParser, skip_invalid: bool) -> tuple[list[DocQAItem], LoadReport]:
    report = LoadReport(path=path)
    items: list[DocQAItem] = []
    seen: set[str] = set()
    for i, (number, row) in enumerate(rows):
        report.rows += 1
        try:
            if isinstance(row, _Bad):  # a line the reader could not parse
                raise row
            if not isinstance(row, dict):
                raise _Bad("(row)", f"expected an object, got {type(row).__name__}")
            item = parse(row, i, path)
            if item.item_id in seen:
                raise _Bad("id", f"duplicate item id {item.item_id!r}")
        except _Bad as bad:
            report.errors.append(RowError(path, number, bad.field, bad.reason))
            continue
        seen.add(item.item_id)
        items.append(item)
    if report.rows == 0:
        raise EmptyDataError(f"{path}: no rows (an empty file, or only blank lines); a data file needs at least one row")
    report.loaded = len(items)
    if report.errors and not skip_invalid:
        raise DataValidationError(report.errors, report.rows)
    return items, report


# --- DocQA-RL-1.6K parquet ------------------------------------------------------------------------

def _docqa_row(row: dict[str, Any], i: int, path: str) -> DocQAItem:
    messages = row.get("prompt")
    if messages is None:
        raise _Bad("prompt", "missing (expected a non-empty list of chat messages)")
    if not isinstance(messages, (list, tuple)):
        raise _Bad("prompt", f"expected a non-empty list of chat messages, got {type(messages).__name__}")
    if not messages:
        raise _Bad("prompt", "empty list (expected at least one chat message {role, content})")
    clean = []
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise _Bad(f"prompt[{j}]", "expected {role: str, content: str}")
        clean.append({"role": m["role"], "content": m["content"]})
    user = [m["content"] for m in clean if m["role"] == "user"]
    if not user or not user[-1].strip():
        raise _Bad("prompt", "no non-empty user message")
    document = document_from_prompt(user[-1])
    if document is not None and not document:
        raise _Bad("prompt", "empty document between <text> and </text>")
    source = _source(row.get("data_source"))
    reward_model = row.get("reward_model")
    if not isinstance(reward_model, dict):
        raise _Bad("reward_model", f"expected an object with ground_truth, got {type(reward_model).__name__}")
    gold = _text(reward_model, "ground_truth", "reward_model.ground_truth")
    extra = row.get("extra_info") or {}
    if not isinstance(extra, dict) or extra.get("index") is None:
        raise _Bad("extra_info.index", "missing")
    item_id = str(extra.get("id") or f"{source}_{extra['index']}")
    question = extra.get("input_question") or extra.get("question") or question_from_prompt(user[-1])
    answers = extra.get("answers")
    answers = tuple(str(a) for a in answers) if isinstance(answers, (list, tuple)) and answers else (gold,)
    return DocQAItem(item_id, source, tuple(clean), str(question), gold, answers)


def validate_docqa_rows(
    rows: Iterable[dict[str, Any]], source: str, *, skip_invalid: bool = False
) -> tuple[list[DocQAItem], LoadReport]:
    """Validate DocQA-layout rows from any reader (parquet, `datasets`, JSON); `source` names them in errors."""
    return _validated(enumerate(rows), source, _docqa_row, skip_invalid)


def load_docqa_parquet(path: str | Path, *, skip_invalid: bool = False) -> tuple[list[DocQAItem], LoadReport]:
    """DocQA-layout rows from a parquet file; rows are numbered from 0 (the parquet row index)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc}); expected a DocQA-layout .parquet "
                        "(or pass --format for another layout)") from None
    _check_columns(table.column_names, "docqa_parquet", str(path))
    return validate_docqa_rows(table.to_pylist(), str(path), skip_invalid=skip_invalid)


def write_docqa_parquet(items: Iterable[DocQAItem], path: str | Path, *, ability: dict[str, str] | None = None) -> Path:
    """Write items in the DocQA-RL-1.6K layout (atomically: temp file + rename)."""
    ability = ability or {"qa": "doc-qa", "math": "doc-math", "choice": "doc-mc"}
    records = [
        {"data_source": it.data_source, "prompt": [dict(m) for m in it.messages], "ability": ability[it.kind],
         "reward_model": {"style": "rule", "ground_truth": it.ground_truth},
         "extra_info": {"index": i, "id": it.item_id, "input_question": it.question, "split": "train",
                        "answers": list(it.answers or (it.ground_truth,))}}
        for i, it in enumerate(items)
    ]
    return atomic_write_parquet(records, path)


# --- plain JSONL ------------------------------------------------------------------------------------

_JSONL_SOURCES = {"qa": "qa_jsonl", "math": "docmath_jsonl", "choice": "choice_jsonl"}


def _gold_sentence(kind: str, answer: str) -> str:
    if kind == "choice":
        return f"The correct answer is ({answer.strip().strip('()').upper()})"
    return f"Therefore, the answer is {answer.strip()}."


def _jsonl_row(row: dict[str, Any], i: int, path: str, template: str = "qwenlong-l1") -> DocQAItem:
    document, question = _text(row, "document"), _text(row, "question")
    kind = row.get("type", "qa")
    if kind not in _JSONL_SOURCES:
        raise _Bad("type", f"{kind!r} is not one of {', '.join(_JSONL_SOURCES)}")
    answers = row.get("answers")
    answers = [answers] if isinstance(answers, str) else answers
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise _Bad("answers", "expected a non-empty string or list of non-empty strings")
    if kind == "choice" and answers[0].strip().strip("()").upper() not in ("A", "B", "C", "D"):
        raise _Bad("answers", f"a choice answer must be a letter A-D, got {answers[0]!r}")
    prompt = build_prompt(document, question, choice=kind == "choice", template=template)
    item_id = str(row.get("id", f"jsonl_{i:06d}"))
    return DocQAItem(item_id, _JSONL_SOURCES[kind], ({"role": "user", "content": prompt},), question.strip(),
                     _gold_sentence(kind, answers[0]), tuple(a.strip() for a in answers))


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(1-based line number, parsed line) for every non-blank line; a line that is not JSON becomes a
    `_Bad` row. Row errors therefore carry the file's own line numbers."""
    rows: list[tuple[int, Any]] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as exc:
                    rows.append((n, _Bad("(row)", f"not valid JSON ({exc.msg})")))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); JSONL is one JSON "
                        "object per line (a .parquet file needs --format docqa_parquet)") from None
    return rows


def load_jsonl(path: str | Path, *, skip_invalid: bool = False,
               template: str = "qwenlong-l1") -> tuple[list[DocQAItem], LoadReport]:
    """Plain JSONL rows, prompts built in the named template (`data.prompt.TEMPLATES`); row numbers in
    errors are the file's line numbers (1-based)."""
    return _validated(_read_jsonl(Path(path)), str(path), partial(_jsonl_row, template=template), skip_invalid)


# --- evaluation layouts (via the `datasets` library, local files only) ----------------------------

def _docmath_row(row: dict[str, Any], i: int, path: str) -> DocQAItem:
    paragraphs = row.get("paragraphs")
    if not isinstance(paragraphs, list) or not any(isinstance(p, str) and p.strip() for p in paragraphs):
        raise _Bad("paragraphs", "expected a non-empty list of strings")
    question = _text(row, "question")
    gold = row.get("ground_truth")
    if gold is None or isinstance(gold, (list, dict)) or str(gold).strip() == "":
        raise _Bad("ground_truth", f"expected a number or boolean, got {gold!r}")
    prompt = build_prompt("\n".join(paragraphs), question)
    return DocQAItem(str(row.get("question_id", f"docmath_{i:06d}")), "docmath_eval",
                     ({"role": "user", "content": prompt},), question.strip(), f"Therefore, the answer is {gold}.", (str(gold),))


def _frames_row(row: dict[str, Any], i: int, path: str) -> DocQAItem:
    wiki = row.get("wiki_items")
    if not isinstance(wiki, list) or not wiki:
        raise _Bad("wiki_items", "expected a non-empty list of {title, text}")
    document = "\n".join(f"{w.get('title', '')}\n{w.get('text', '')}" for w in wiki if isinstance(w, dict))
    if not document.strip():
        raise _Bad("wiki_items", "empty document")
    question, answer = _text(row, "Prompt"), _text(row, "Answer")
    prompt = build_prompt(document, question)
    return DocQAItem(f"frames_{i:06d}", "frames", ({"role": "user", "content": prompt},), question.strip(), answer, (answer,))


def _longbench_row(name: str) -> RowParser:
    def parse(row: dict[str, Any], i: int, path: str) -> DocQAItem:
        context, question = _text(row, "context"), _text(row, "input")
        answers = row.get("answers")
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise _Bad("answers", "expected a non-empty list of non-empty strings")
        source = f"longbench_qa_{row.get('dataset') or name}"  # every LongBench-layout item is QA
        prompt = build_prompt(context, question)
        return DocQAItem(str(row.get("_id", f"{name}_{i:06d}")), source, ({"role": "user", "content": prompt},),
                         question.strip(), answers[0], tuple(answers))

    return parse


def load_eval(
    path: str | Path, layout: EvalLayout, *, name: str = "longbench", skip_invalid: bool = False
) -> tuple[list[DocQAItem], LoadReport]:
    """An evaluation set from a local JSON/JSONL file, read with `datasets` (offline)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    try:
        rows = datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a file that is not JSON
        raise DataError(f"{path}: not readable as JSON/JSONL for the {layout} layout "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    _check_columns(rows.column_names, layout, str(path))
    parse = {"docmath": _docmath_row, "frames": _frames_row, "longbench": _longbench_row(name)}[layout]
    return _validated(enumerate(dict(r) for r in rows), str(path), parse, skip_invalid)


def load_items(path: str | Path, fmt: Literal["docqa_parquet", "jsonl"], *, skip_invalid: bool = False,
               template: str = "qwenlong-l1"):
    """The training/validation loader selected by `data.format`. `template` (`data.prompt_template`) builds
    the jsonl prompts; DocQA parquet rows carry their prompt already and are read as they are."""
    if fmt == "docqa_parquet":
        return load_docqa_parquet(path, skip_invalid=skip_invalid)
    return load_jsonl(path, skip_invalid=skip_invalid, template=template)
