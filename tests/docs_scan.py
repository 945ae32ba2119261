"""Reading the user docs for tests/test_docs.py: the commands, config keys, metric names and run-directory
files they name, each with the file and line it came from. Pure text: no project import.

The rules (what counts as what) are here, once:
- docs: README.md, docs/*.md and the entry-point folders' READMEs (`DOC_GLOBS`);
- a command: in a fenced block tagged bash/sh/shell/console, every line that is not a comment; in any other
  fenced block, a line that starts with one of `COMMAND_PREFIXES` (output and trees never do). A trailing `\\`
  joins the next line, `$ ` prompts and ` # comments` are dropped;
- a command mention: an inline code span that starts with one of `COMMAND_PREFIXES`;
- a config key: a dotted name in a code span (or a command) whose first part is a schema section, not
  preceded by `.`, `/` or a word character and not a file name (`rl.py`); `a.b.c / d / e` names the
  siblings `a.b.d` and `a.b.e`; `=value` and `: value` are not part of it;
- a metric: a code span in the first column of a table under a heading that says "metric";
  `x_mean` / `_max` abbreviates `x_max`;
- a run-directory file: a code span that looks like a path with a file extension of `RUN_FILE_EXTS` or a
  trailing `/`, in a section whose heading mentions the run directory (`RUN_DIR_HEADINGS`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DOC_GLOBS = ("README.md", "docs/*.md", "launcher/README.md", "converters/README.md", "eval/README.md")
SHELL_LANGS = {"bash", "sh", "shell", "console"}
COMMAND_PREFIXES = ("nemo-qwenlong", "make ", ".venv/bin/", "python ", "python3", "bash ", "pip ", "NQL_")
RUN_FILE_EXTS = ("json", "jsonl", "md", "csv", "png", "sqlite", "yaml", "txt", "safetensors")
RUN_DIR_HEADINGS = re.compile(r"run director|what `make run` does|the main job", re.I)
FILE_NAME = re.compile(r"\.(py|pyc|png|json|jsonl|md|yaml|yml|csv|txt|sh|sqlite|parquet|safetensors|pt)$")


@dataclass(frozen=True)
class Found:
    text: str
    where: str  # "docs/run.md:12"


def doc_files(root: Path) -> list[Path]:
    return sorted({p for pattern in DOC_GLOBS for p in root.glob(pattern)})


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


def fenced_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, 1-based line of the block's first body line, body lines) of each fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*```+\s*([\w-]*)", lines[i])
        if not m:
            i += 1
            continue
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```", lines[i]):
            body.append(lines[i])
            i += 1
        yield m.group(1).lower(), start + 1, body
        i += 1


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of every line outside fenced blocks."""
    inside = False
    for n, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*```", line):
            inside = not inside
            continue
        if not inside:
            yield n, line


def code_spans(line: str) -> list[str]:
    return [m.group(2).strip() for m in re.finditer(r"(`+)(.+?)\1", line)]


def _strip_comment(line: str) -> str:
    return re.sub(r"\s+#(\s.*)?$", "", line).rstrip()


def fenced_commands(path: Path, root: Path) -> list[Found]:
    out: list[Found] = []
    for lang, first, body in fenced_blocks(path.read_text(encoding="utf-8")):
        joined: list[tuple[int, str]] = []
        for k, raw in enumerate(body):
            line = raw.strip()
            if joined and joined[-1][1].endswith("\\"):
                n, prev = joined[-1]
                joined[-1] = (n, prev[:-1].rstrip() + " " + _strip_comment(line))
                continue
            joined.append((first + k, _strip_comment(line.removeprefix("$ "))))
        for n, line in joined:
            line = line.rstrip("\\").strip()
            if not line or line.startswith("#"):
                continue
            if lang in SHELL_LANGS or line.startswith(COMMAND_PREFIXES):
                out.append(Found(line, f"{_rel(path, root)}:{n}"))
    return out


def inline_commands(path: Path, root: Path) -> list[Found]:
    return [Found(span, f"{_rel(path, root)}:{n}") for n, line in prose_lines(path.read_text(encoding="utf-8"))
            for span in code_spans(line) if span.startswith(COMMAND_PREFIXES)]


def dotted_keys(text: str, sections: set[str]) -> list[str]:
    """Config keys named in one code span or command (see the module docstring)."""
    keys: list[str] = []
    pattern = r"(?<![\w./-])(%s)((?:\.[A-Za-z0-9_]+)+)" % "|".join(sorted(sections, key=len, reverse=True))
    for m in re.finditer(pattern, text):
        key = m.group(1) + m.group(2)
        if FILE_NAME.search(key):
            continue
        keys.append(key)
        parent = key.rsplit(".", 1)[0]
        rest = text[m.end():]
        while sib := re.match(r"\s*/\s*([A-Za-z_][A-Za-z0-9_]*)(?![\w.])", rest):
            keys.append(f"{parent}.{sib.group(1)}")
            rest = rest[sib.end():]
    return keys


def config_keys(path: Path, root: Path, sections: set[str]) -> list[Found]:
    text = path.read_text(encoding="utf-8")
    found = [Found(k, f"{_rel(path, root)}:{n}") for n, line in prose_lines(text)
             for span in code_spans(line) for k in dotted_keys(span, sections)]
    found += [Found(k, c.where) for c in fenced_commands(path, root) for k in dotted_keys(c.text, sections)]
    return found


def sections_of(text: str) -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """(heading, its prose lines) for every heading (the lines before the first heading: heading "")."""
    heading, lines = "", []
    for n, line in prose_lines(text):
        m = re.match(r"^#+\s+(.*)", line)
        if m:
            yield heading, lines
            heading, lines = m.group(1).strip(), []
        else:
            lines.append((n, line))
    yield heading, lines


def metric_names(path: Path, root: Path) -> list[Found]:
    out: list[Found] = []
    for heading, lines in sections_of(path.read_text(encoding="utf-8")):
        if "metric" not in heading.lower():
            continue
        for n, line in lines:
            cells = line.strip().strip("|").split("|") if line.lstrip().startswith("|") else []
            if not cells or set(cells[0].strip()) <= set("-: "):
                continue
            previous = ""
            for span in code_spans(cells[0]):
                name = previous.rsplit("_", 1)[0] + span if span.startswith("_") and previous else span
                out.append(Found(name, f"{_rel(path, root)}:{n}"))
                previous = name
    return out


def run_dir_files(path: Path, root: Path) -> list[Found]:
    out: list[Found] = []
    looks_like_path = re.compile(r"^[\w.<>{},*-]+(/[\w.<>{},*-]*)*$")
    for heading, lines in sections_of(path.read_text(encoding="utf-8")):
        if not RUN_DIR_HEADINGS.search(heading):
            continue
        for n, line in lines:
            for span in code_spans(line):
                ext = span.rsplit(".", 1)[-1] if "." in span.rsplit("/", 1)[-1] else ""
                if looks_like_path.match(span) and (span.endswith("/") or ext in RUN_FILE_EXTS):
                    if not (root / span).exists():  # a repository file (a recipe) is an input, not an output
                        out.append(Found(span, f"{_rel(path, root)}:{n}"))
    return out


@dataclass(frozen=True)
class CodeStrings:
    """String literals in the package's source, f-strings as patterns (a formatted part matches any text
    that is a word somewhere in the package), and every word of the source."""

    literals: frozenset[str]
    patterns: tuple[re.Pattern[str], ...]
    words: frozenset[str]

    def written(self, name: str) -> bool:
        if name in self.literals:
            return True
        for p in self.patterns:
            m = p.fullmatch(name)
            if m and all(g in self.words or g == "X1" for g in m.groups()):
                return True
        return False


def code_strings(package: Path) -> CodeStrings:
    import ast

    literals: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    words: set[str] = set()
    for path in sorted(package.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        words |= set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", source))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.add(node.value)
            elif isinstance(node, ast.JoinedStr):
                parts = [re.escape(v.value) if isinstance(v, ast.Constant) else r"(.+?)" for v in node.values]
                if any(isinstance(v, ast.Constant) and v.value.strip() for v in node.values):
                    patterns.append(re.compile("".join(parts)))
    return CodeStrings(frozenset(literals), tuple(patterns), frozenset(words))
