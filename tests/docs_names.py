"""Whether a name the docs use exists: a CLI subcommand or option, a script or Makefile target, a schema key or
module path, a string the package writes (a metric, a run-directory file). Used by tests/test_docs.py."""

from __future__ import annotations

import argparse
import re
import typing
from functools import cache
from pathlib import Path

from tests.docs_commands import drop_optional
from tests.docs_scan import CodeStrings, code_strings

ROOT = Path(__file__).resolve().parents[1]


@cache
def parser() -> argparse.ArgumentParser:
    from nemo_qwenlong.cli.main import build_parser

    return build_parser()


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {k: v for a in p._actions if isinstance(a, argparse._SubParsersAction) for k, v in a.choices.items()}


def cli_problems(command: str) -> list[str]:
    """A `nemo-qwenlong ...` text: its subcommands exist and its options belong to the last one (`{a,b}`: to
    one of them)."""
    words = command.replace("\\|", "|").split()[1:]
    parsers, path = [parser()], ["nemo-qwenlong"]
    while words and not words[0].startswith("-"):
        subs = _subparsers(parsers[0])
        alternatives = re.fullmatch(r"\{([a-z0-9,-]+)\}", words[0])
        names = alternatives.group(1).split(",") if alternatives else [words[0]]
        if not subs or not all(re.fullmatch(r"[a-z][a-z0-9-]*", n) for n in names):
            break  # a positional argument or a placeholder
        unknown = [n for n in names if n not in subs]
        if unknown:
            return [f"`{' '.join(path)}` has no subcommand {unknown[0]!r} (has {sorted(subs)})"]
        words.pop(0)
        parsers = [subs[n] for n in names]
        path.append("|".join(names))
    return [f"`{' '.join(path)}` has no option {option}" for word in words
            for option in re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", word.strip("[]{}()"))
            if not any(option in p._option_string_actions for p in parsers)]


def script_problems(command: str) -> list[str]:
    words = drop_optional(command).split()
    head = words[0] if words[0] not in ("python", "bash") else words[1]
    if words[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        return [] if words[1] in targets else [f"Makefile has no target {words[1]}"]
    if words[:2] == ["python", "-m"]:
        if not words[2].startswith("nemo_qwenlong"):  # another package's module: found without importing it
            import importlib.util

            top = importlib.util.find_spec(words[2].split(".")[0])
            path = Path(top.origin).parent.joinpath(*words[2].split(".")[1:]) if top and top.origin else None
            found = path is not None and (path.with_suffix(".py").is_file() or (path / "__main__.py").is_file())
            return [] if found else [f"no module {words[2]}"]
        module = ROOT / (words[2].replace(".", "/") + ".py")
        return [] if module.is_file() else [f"no module {words[2]}"]
    if "<" in head or head.startswith(("-", "/")) or not re.search(r"\.(py|sh)$|^\.ci/", head):
        return []
    path = ROOT / head
    if not path.is_file():
        return [f"no file {head}"]
    if path.suffix != ".py":
        return []
    source = path.read_text()
    return [f"{head} takes no {opt}" for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", command)
            if path.parts[-2] == "benchmarks" and f'"{opt}"' not in source]


def _origin_in(annotation: typing.Any, kind: type) -> bool:
    return typing.get_origin(annotation) is kind or any(typing.get_origin(a) is kind for a in typing.get_args(annotation))


def schema_has(key: str) -> bool:
    """`curriculum.stages.1.steps`: a field of the schema (a list index may be a number, N or k)."""
    from nemo_qwenlong.config import RunConfig
    from nemo_qwenlong.config.loader import nested_model

    model: typing.Any = RunConfig
    parts = key.split(".")
    while parts:
        part = parts.pop(0)
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        annotation = fields[part].annotation
        if _origin_in(annotation, dict):
            return True  # a free mapping (cluster.env_vars): any key below it
        if _origin_in(annotation, list) and parts and re.fullmatch(r"\d+|N|k", parts[0]):
            parts.pop(0)
        model = nested_model(annotation)
        if model is None:
            return not parts
    return True


def code_has(key: str) -> bool:
    """`rollout.refit.ExtraBytes`: a module of the package and names defined in it (a code reference)."""
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT / "nemo_qwenlong" / Path(*parts[:i])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            source = module.read_text()
            return all(re.search(rf"\b{re.escape(p)}\b", source) for p in parts[i:])
    return False


@cache
def code() -> CodeStrings:
    return code_strings(ROOT / "nemo_qwenlong")


def run_dir_problems(path: str) -> list[str]:
    from nemo_qwenlong.config.schema import PIPELINE_ORDER

    problems = []
    for part in filter(None, path.split("/")):
        options = re.search(r"\{([^}]*)\}", part)
        for name in ([part.replace(options.group(0), o) for o in options.group(1).split(",")] if options else [part]):
            if re.fullmatch(r"(<[^>]*>|[-_. ])+", name):
                continue  # a placeholder only: <runs_dir>, <name>-<timestamp>
            stage = re.fullmatch(r"(NN|\d\d)-([a-z]+)(-.*)?", name)
            if stage:
                ok = stage.group(2) in PIPELINE_ORDER
            else:
                ok = code().written(re.sub(r"<[^>]*>", "X1", name))
            if not ok:
                problems.append(f"{path}: no code writes {name!r}")
    return problems
