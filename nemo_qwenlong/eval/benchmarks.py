"""Loaders for the released evaluation layouts (spec §1.2, §8) and for any LongBench-layout JSONL.

Under `--data-dir DIR` (the released `./datasets` folder):
- `docmath/{complong,compshort,simplong,simpshort}_testmini.jsonl` (`question`, `paragraphs`,
  `ground_truth`), kept only when the question and the `\\n`-joined paragraphs both appear in a prompt
  of `docmath/docmath_all_test_200.jsonl` — the released filter, which keeps the 200 held-out items
  and so keeps the 600 DocMath training items out of the score;
- `frames/test.jsonl` (`wiki_items` [{title, text}], `Prompt`, `Answer`);
- LongBench v1 subsets as extracted files `longbench/data/<name>.jsonl` (also `data/<name>.jsonl` or
  `<name>.jsonl` directly under DIR), records `_id`, `input`, `context`, `answers`;
- any other LongBench-layout JSONL, named `NAME=PATH.jsonl` (or a bare path: named by its file stem).

Each item's prompt is the shared template (`data.prompt.build_prompt`). Gold answers are strings: the
QA sets' `answers`, Frames' `Answer`, DocMath's `str(ground_truth)` (what the released scorer formats).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nemo_qwenlong.data.prompt import build_prompt
from nemo_qwenlong.eval.metrics import BENCHMARKS, QA_BENCHMARKS
from nemo_qwenlong.eval.results import EvalInputError, read_jsonl

DOCMATH_SUBSETS = ("complong", "compshort", "simplong", "simpshort")
DOCMATH_HELDOUT = "docmath_all_test_200.jsonl"


class BenchmarkError(EvalInputError):
    """A benchmark name or file that cannot be loaded (the message says which and why)."""


@dataclass(frozen=True)
class EvalItem:
    id: str
    benchmark: str
    prompt: str
    question: str  # as the judge gets it (the raw field)
    answers: tuple[str, ...]


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise BenchmarkError(f"{what}: {path} not found")
    return path


def _field(obj: dict, key: str, where: str) -> object:
    if key not in obj:
        raise BenchmarkError(f"{where}: missing field {key!r}")
    return obj[key]


def load_docmath(data_dir: Path) -> Iterator[EvalItem]:
    heldout_path = _require(data_dir / "docmath" / DOCMATH_HELDOUT, "docmath held-out list")
    prompts = []
    for number, row in read_jsonl(heldout_path, what="docmath held-out list"):
        try:
            prompts.append(row["prompt"][0]["content"])
        except (KeyError, IndexError, TypeError):
            raise BenchmarkError(f"{heldout_path}, line {number}: expected a verl row with prompt[0].content") from None
    for subset in DOCMATH_SUBSETS:
        path = _require(data_dir / "docmath" / f"{subset}_testmini.jsonl", f"docmath {subset}")
        for number, obj in read_jsonl(path, what=f"docmath {subset}"):
            where = f"{path}, line {number}"
            question = str(_field(obj, "question", where))
            context = "\n".join(_field(obj, "paragraphs", where))
            if not _in_heldout(question, context, prompts):
                continue
            yield EvalItem(id=str(obj.get("question_id") or f"{subset}-{number}"), benchmark="docmath",
                           prompt=build_prompt(context, question), question=question,
                           answers=(str(_field(obj, "ground_truth", where)),))


def _in_heldout(question: str, context: str, prompts: list[str]) -> bool:
    """The released `search_item`: both texts (stripped) inside one held-out prompt."""
    q, c = question.strip(), context.strip()
    return any(q in p and c in p for p in prompts)


def load_frames(data_dir: Path) -> Iterator[EvalItem]:
    path = _require(data_dir / "frames" / "test.jsonl", "frames")
    for number, obj in read_jsonl(path, what="frames"):
        where = f"{path}, line {number}"
        wiki = _field(obj, "wiki_items", where)
        document = "\n".join(f"{w['title']}\n{w['text']}" for w in wiki)
        question = str(_field(obj, "Prompt", where))
        yield EvalItem(id=str(obj.get("id", number - 1)), benchmark="frames", prompt=build_prompt(document, question),
                       question=question, answers=(str(_field(obj, "Answer", where)),))


def load_longbench_file(path: Path, name: str) -> Iterator[EvalItem]:
    for number, obj in read_jsonl(_require(path, name), what=name):
        where = f"{path}, line {number}"
        answers = _field(obj, "answers", where)
        if not isinstance(answers, list) or not answers:
            raise BenchmarkError(f"{where}: answers must be a non-empty list")
        question = str(_field(obj, "input", where))
        yield EvalItem(id=str(obj.get("_id", number)), benchmark=name,
                       prompt=build_prompt(str(_field(obj, "context", where)), question), question=question,
                       answers=tuple(str(a) for a in answers))


def _longbench_path(data_dir: Path, name: str) -> Path:
    for candidate in (data_dir / "longbench" / "data" / f"{name}.jsonl", data_dir / "data" / f"{name}.jsonl",
                      data_dir / f"{name}.jsonl"):
        if candidate.is_file():
            return candidate
    raise BenchmarkError(f"{name}: no longbench/data/{name}.jsonl (nor data/{name}.jsonl, {name}.jsonl) under {data_dir}")


def parse_benchmarks(spec: str) -> list[tuple[str, Path | None]]:
    """`docmath,frames,x=path.jsonl,other.jsonl` -> [(name, explicit path or None)]."""
    out: list[tuple[str, Path | None]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "=" in part:
            name, path = part.split("=", 1)
            out.append((name.strip(), Path(path.strip())))
        elif part.endswith(".jsonl"):
            out.append((Path(part).stem, Path(part)))
        elif part in BENCHMARKS:
            out.append((part, None))
        else:
            raise BenchmarkError(f"unknown benchmark {part!r}: accepted are {', '.join(BENCHMARKS)}, "
                                 "NAME=PATH.jsonl or PATH.jsonl (LongBench record layout)")
    if not out:
        raise BenchmarkError("no benchmarks given")
    return out


def load(name: str, path: Path | None, data_dir: Path | None) -> list[EvalItem]:
    if path is not None:
        items = list(load_longbench_file(path, name))
    elif data_dir is None:
        raise BenchmarkError(f"{name}: needs --data-dir (the folder holding the released eval data)")
    elif name == "docmath":
        items = list(load_docmath(data_dir))
    elif name == "frames":
        items = list(load_frames(data_dir))
    elif name in QA_BENCHMARKS:
        items = list(load_longbench_file(_longbench_path(data_dir, name), name))
    else:  # parse_benchmarks only lets known names through
        raise BenchmarkError(f"unknown benchmark {name!r}")
    if not items:
        raise BenchmarkError(f"{name}: no items" + (" (no docmath item is in the held-out list)" if name == "docmath" else ""))
    return items



def load_all(spec: str, data_dir: Path | None, *, limit: int | None = None) -> list[EvalItem]:
    """The items of every benchmark in `spec` (`parse_benchmarks`), the first `limit` of each."""
    items: list[EvalItem] = []
    for name, path in parse_benchmarks(spec):
        loaded = load(name, path, data_dir)
        items += loaded[:limit] if limit else loaded
    return items
