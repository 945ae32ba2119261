"""The user-facing docs stand on their own: README.md and docs/**/*.md never send a reader to
`../shared/` (a development folder that a clone of the repository does not have), and every relative
markdown link in them points at a file or folder of the repository and, with a `#fragment`, at a
heading of that file (GitHub's anchor rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "eval" / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, without punctuation other than
    '-' and '_', spaces as '-'."""
    text = LINK.sub(lambda m: m.group(1), heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    out = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for m in LINK.finditer(INLINE_CODE.sub("", line)):
            out.append((number, m.group(2)))
    return out


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_docs_exist():
    names = {_rel(p) for p in DOCS}
    assert {"README.md", "docs/getting-started.md", "docs/method.md", "docs/design-decisions.md",
            "docs/cpu-facts.md"} <= names


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_no_shared_folder_reference(path: Path):
    lines = path.read_text(encoding="utf-8").splitlines()
    hits = [f"{_rel(path)}:{n}: {line.strip()}" for n, line in enumerate(lines, 1) if "../shared" in line]
    assert not hits, "user docs must not point at ../shared (not in a clone):\n" + "\n".join(hits)


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_relative_links_resolve(path: Path):
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{_rel(path)}:{number}: ({target})"
        if ROOT not in dest.parents and dest != ROOT:
            problems.append(f"{where} leaves the repository")
        elif not dest.exists():
            problems.append(f"{where} no such file or folder")
        elif fragment and dest.is_file() and dest.suffix == ".md" and fragment not in anchors(dest):
            problems.append(f"{where} no heading with anchor #{fragment} in {_rel(dest)}")
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_slug_follows_github():
    assert slug("Data (`--data-dir`, the released `./datasets` layout)") == \
        "data---data-dir-the-released-datasets-layout"
    assert slug("Warm-up SFT data (`sft.train_path`)") == "warm-up-sft-data-sfttrain_path"
    assert slug("The paper's numbers (Table 4)") == "the-papers-numbers-table-4"
    assert slug("megatron-core 0.19.2 on CPU") == "megatron-core-0192-on-cpu"


def test_the_checker_catches_a_bad_link(tmp_path: Path):
    page = tmp_path / "p.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nothing) `[code](ignored.md)`\n"
                    "```\n[fenced](x.md)\n```\n")
    assert links(page) == [(3, "#title"), (3, "#nothing")]
    assert anchors(page) == {"title"}
