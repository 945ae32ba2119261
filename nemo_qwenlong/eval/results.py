"""Append-only JSONL result files that survive a kill: one complete line per finished item.

Each `append` writes whole lines, flushes and fsyncs. A kill mid-write can leave one cut last line;
`ResultsFile` drops it on open (the item is simply redone), so a re-run skips exactly the items whose
lines are complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class EvalInputError(ValueError):
    """A file or row of the evaluation that cannot be used; the message names the file, line and field."""


def read_jsonl(path: Path, *, what: str = "file") -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for each non-blank line; a bad line raises EvalInputError naming it."""
    with path.open(encoding="utf-8") as source:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalInputError(f"{what} {path}, line {number}: not JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise EvalInputError(f"{what} {path}, line {number}: expected a JSON object, got {type(obj).__name__}")
            yield number, obj


class ResultsFile:
    """`rows()` are the complete lines; `append()` adds more; keys come from `key(row)`."""

    def __init__(self, path: Path, key: str = "key") -> None:
        self.path, self.key = path, key
        self._repair()

    def _repair(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):  # a line cut by a kill
            with self.path.open("r+b") as sink:
                sink.truncate(end)

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [obj for _, obj in read_jsonl(self.path, what="results")]

    def done(self) -> set[str]:
        return {str(r[self.key]) for r in self.rows()}

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as sink:
            sink.write(text)
            sink.flush()
            os.fsync(sink.fileno())
