"""The DocQA item every loader produces, and row validation errors.

Nothing is dropped silently: a loader either fails with the full list of bad rows
(`DataValidationError`) or, with `skip_invalid`, skips them and reports every one in `LoadReport`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nemo_qwenlong.data.kind import Kind, route


@dataclass(frozen=True)
class DocQAItem:
    item_id: str
    data_source: str  # routes the reward; carries the released length-bucket suffix when known
    messages: tuple[dict[str, str], ...]  # chat messages, template filled (the released `prompt` column)
    question: str  # what the judge sees as "Problem"
    ground_truth: str  # answer sentence ("…the answer is X", "The correct answer is (B)") or a bare gold
    answers: tuple[str, ...] = ()  # every acceptable gold (evaluation F1 takes the max)

    @property
    def kind(self) -> Kind:
        return route(self.data_source)

    @property
    def prompt_text(self) -> str:
        return "\n".join(m["content"] for m in self.messages)


@dataclass(frozen=True)
class RowError:
    file: str
    row: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.row}: {self.field}: {self.reason}"


@dataclass
class LoadReport:
    path: str
    rows: int = 0
    loaded: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.errors)


class DataError(ValueError):
    """A data file that cannot be used as a whole: unreadable, empty, wrong format, a missing column.
    The message names the file and says what is accepted."""


class EmptyDataError(DataError):
    """A data file with no rows."""


class DataValidationError(DataError):
    """Bad rows; the message has one line per row (file, row, field, reason)."""

    def __init__(self, errors: Sequence[RowError], total_rows: int) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  {e}" for e in self.errors[:200])
        more = f"\n  ... and {len(self.errors) - 200} more" if len(self.errors) > 200 else ""
        super().__init__(
            f"{len(self.errors)} of {total_rows} rows are invalid (set data.skip_invalid=true to skip them):\n{lines}{more}"
        )
