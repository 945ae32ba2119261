"""Warm-up SFT data: chat messages whose last message is the assistant's response.

The paper's warm-up set is not released (spec §11.2); this is the format `sft.train_path` takes,
JSONL or Parquet, one example a row, either
    {"messages": [{"role": "user", "content": PROMPT}, ..., {"role": "assistant", "content": RESPONSE}]}
or  {"prompt": PROMPT, "response": RESPONSE}            (PROMPT becomes one user message)
The loss is the NLL of the response tokens only (the chat-templated prompt is context).
Bad rows fail together, each named by file, row and field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_qwenlong.data.schema import DataValidationError, RowError
from nemo_qwenlong.fsio import atomic_write_text


@dataclass(frozen=True)
class SFTExample:
    messages: tuple[dict[str, str], ...]  # the prompt side: everything before the response
    response: str


def _message_list(value: Any) -> tuple[dict[str, str], ...] | str:
    if not isinstance(value, list) or len(value) < 2:
        return "expected a list of at least two {role, content} messages"
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return "every message needs string 'role' and 'content'"
    if value[-1]["role"] != "assistant":
        return f"the last message must be the assistant's response, got role {value[-1]['role']!r}"
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def parse_row(row: Any) -> SFTExample | tuple[str, str]:
    """An example, or (field, reason) for a bad row."""
    if not isinstance(row, dict):
        return "(row)", f"expected an object, got {type(row).__name__}"
    if "messages" in row:
        msgs = _message_list(row["messages"])
        if isinstance(msgs, str):
            return "messages", msgs
        if not msgs[-1]["content"].strip():
            return "messages", "empty assistant response"
        return SFTExample(msgs[:-1], msgs[-1]["content"])
    for key in ("prompt", "response"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            return key, "missing or empty (rows need 'messages', or 'prompt' and 'response')"
    return SFTExample(({"role": "user", "content": row["prompt"]},), row["response"])


def _rows(path: Path) -> list[Any]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    rows: list[Any] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                rows.append(f"not valid JSON ({exc.msg})")
    return rows


def load_sft(path: str | Path) -> list[SFTExample]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SFT data {path} does not exist")
    examples, errors = [], []
    rows = _rows(path)
    for i, row in enumerate(rows):
        parsed = ("(row)", row) if isinstance(row, str) else parse_row(row)
        if isinstance(parsed, SFTExample):
            examples.append(parsed)
        else:
            errors.append(RowError(str(path), i, *parsed))
    if errors:
        raise DataValidationError(errors, len(rows))
    if not examples:
        raise DataValidationError([RowError(str(path), 0, "(file)", "no examples")], 0)
    return examples


def write_sft_jsonl(examples: Iterable[SFTExample], path: str | Path) -> Path:
    lines = (json.dumps({"messages": [*e.messages, {"role": "assistant", "content": e.response}]}) for e in examples)
    return atomic_write_text(path, "".join(line + "\n" for line in lines))
