"""Nothing in the config is silently ignored: every schema field is read by code outside config/, or says in
the schema why not (`field(..., informational="reason")`, config.base). A dead field fails here.

The fields come from walking the pydantic schema (RunConfig and every nested section, list items included); a
read is an attribute access `<something>.<field name>` in nemo_qwenlong/ outside config/ (the schema and its
validators), found with `ast`. Not counted as reads: a called attribute (`rng.shuffle(...)` is a method, not
the field `data.shuffle`), and attributes of `self`, `args` (argparse) and `opts` (run/launch options), whose
names meet field names (`opts.resume` is not `checkpoint.resume`). Other names that coincide still pass: the
check is by name."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

import nemo_qwenlong
from nemo_qwenlong.config import RunConfig
from nemo_qwenlong.config.base import INFORMATIONAL, Section, field
from nemo_qwenlong.config.loader import nested_model

PACKAGE = Path(nemo_qwenlong.__file__).resolve().parent
NOT_CONFIG = frozenset({"self", "args", "opts"})


def schema_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str | None]]:
    """(dotted key, field name, informational reason or None) of every field, nested sections included."""
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        yield f"{prefix}{name}", name, extra.get(INFORMATIONAL)
        sub = nested_model(info.annotation)
        if sub is not None:
            yield from schema_fields(sub, f"{prefix}{name}.")


def attribute_reads(source: str) -> set[str]:
    """Names read as attributes in `source` (not called, not on self/args/opts)."""
    tree = ast.parse(source)
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and id(node) not in called
            and not (isinstance(node.value, ast.Name) and node.value.id in NOT_CONFIG)}


def package_reads() -> set[str]:
    files = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "config"]
    return set().union(*(attribute_reads(p.read_text()) for p in files))


def dead_fields(model: type[BaseModel], reads: set[str]) -> list[str]:
    return [key for key, name, reason in schema_fields(model) if name not in reads and not reason]


def test_every_field_is_read_or_marked_informational() -> None:
    dead = dead_fields(RunConfig, package_reads())
    assert not dead, (f"schema fields no code outside config/ reads: {dead}; use them, remove them, or mark them "
                      "field(..., informational='why')")


def test_informational_fields_are_not_read_after_all() -> None:
    """A marker stays true: a field the code now reads loses its `informational` reason."""
    reads = package_reads()
    stale = [key for key, name, reason in schema_fields(RunConfig) if reason and name in reads]
    assert not stale, f"marked informational but read outside config/: {stale}"


def test_the_check_catches_a_dead_field_and_honours_the_marker() -> None:
    class Inner(Section):
        used: int = field(1, "read below")
        dead: int = field(2, "read by nothing")

    class Outer(Section):
        inner: list[Inner] = field([], "list items are walked too")
        noted: bool = field(False, "shown only", informational="documents the site, read by no code")
        resume: str = field("auto", "read only as opts.resume and args.resume")
        shuffle: bool = field(True, "only rng.shuffle(...) is called")

    reads = attribute_reads("x = cfg.inner\ny = x[0].used\nopts.resume\nargs.resume\nrng.shuffle(items)\n")
    assert dead_fields(Outer, reads) == ["inner.dead", "resume", "shuffle"]
    assert ("noted", "noted", "documents the site, read by no code") in list(schema_fields(Outer))
