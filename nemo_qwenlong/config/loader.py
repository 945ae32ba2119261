"""Load YAML recipes (with `defaults:` inheritance), apply dotted overrides, validate, report.

A recipe is a YAML mapping. Its optional `defaults:` key names one or more recipes (paths relative
to the recipe's own folder) that are merged first, in order; the recipe's own keys win. Mappings
merge key by key, lists and scalars replace. Overrides `a.b.c=value` are applied last; the value is
parsed as YAML (`0.28`, `true`, `null`, `[1, 2]`); a numeric part indexes a list (`curriculum.stages.1.steps=40`).
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nemo_qwenlong.config.schema import RunConfig
from nemo_qwenlong.fsio import atomic_write_text
from nemo_qwenlong.redact import redact_tree

DEFAULTS_KEY = "defaults"
RESOLVED_NAME = "config.yaml"


class ConfigError(ValueError):
    """A recipe or override that does not validate; the message lists every problem."""


Origins = dict[tuple[str, ...], str]  # key path -> where it was set ("conf/a.yaml:12 (via defaults of ...)")
OVERRIDE_ORIGIN = "command line override {key}=..."  # the value is left out: it may be a credential


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                overlays: Sequence[str | os.PathLike] = ()) -> RunConfig:
    """Resolve a recipe file (or the schema defaults when `path` is None), then `overlays` (recipe-shaped files
    merged on top in order, e.g. a cluster file), then overrides. A problem names the file and line (or the
    command line override) that set the offending key."""
    tree, origins = _load(Path(path)) if path is not None else ({}, {})
    for overlay in overlays:
        top, found = _load(Path(overlay))
        tree = deep_merge(tree, top)
        origins.update(found)
    if overrides:
        # Overrides may reach into schema defaults (e.g. curriculum.stages.1.steps), so resolve them
        # on the full default tree with the recipe merged in.
        tree = deep_merge(RunConfig().model_dump(mode="python"), tree)
    for item in overrides:
        apply_override(tree, item)
        key = item.partition("=")[0].strip()
        origins[tuple(key.split("."))] = OVERRIDE_ORIGIN.format(key=key)
    return validate_tree(tree, source=str(path) if path else "<defaults>", origins=origins)


def validate_tree(tree: dict[str, Any], source: str = "<config>", origins: Origins | None = None) -> RunConfig:
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        lines = [describe_error(e) + _set_at(e["loc"], origins or {}) for e in err.errors()]
        raise ConfigError(f"{source}: {len(lines)} problem(s)\n" + "\n".join(f"  - {ln}" for ln in lines)) from None


def check_runnable(cfg: RunConfig, source: str) -> RunConfig:
    """`cfg` if `nemo-qwenlong run` accepts it from the config alone (RunConfig.runnable_problems), else a
    ConfigError listing every problem. `config validate`, `plan`, `launch` and `run` call it right after
    loading, so a recipe `run` would refuse fails each of them with the same message (exit 2)."""
    problems = cfg.runnable_problems()
    if problems:
        raise ConfigError(f"{source}: {len(problems)} problem(s) `nemo-qwenlong run` refuses\n"
                          + "\n".join(f"  - {p}" for p in problems))
    return cfg


def _set_at(loc: Sequence[Any], origins: Origins) -> str:
    """Where the offending key was set: an override of it or of a key under it (a section-level check),
    else the recipe line that set it, else the nearest enclosing key; '' when only schema defaults did."""
    parts = tuple(str(p) for p in loc if not str(p).startswith("function-"))
    overrides = sorted({v for k, v in origins.items() if k[:len(parts)] == parts and v.startswith("command line")})
    if parts and overrides:
        return f" (set at {'; '.join(overrides)})"
    for n in range(len(parts), 0, -1):
        if parts[:n] in origins:
            return f" (set at {origins[parts[:n]]})"
    return ""


def load_tree(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The merged mapping of a recipe and everything it inherits."""
    return _load(path, _chain)[0]


def _load(path: Path, chain: tuple[Path, ...] = (), referrer: str | None = None) -> tuple[dict[str, Any], Origins]:
    """(merged mapping, where each key path was set) for a recipe and the `defaults:` it inherits."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"defaults cycle: {cycle}")
    if not path.is_file():
        named = f" (named in `{DEFAULTS_KEY}:` at {referrer})" if referrer else ""
        raise ConfigError(f"config file not found: {path}{named}")
    via = f" via {' -> '.join(p.name for p in (*chain, path))}" if chain else ""
    raw, lines = _read_yaml(path)
    parents = raw.pop(DEFAULTS_KEY, None) or []
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}:{lines.get((DEFAULTS_KEY,), '?')}: '{DEFAULTS_KEY}' must be a path or a list of "
                          f"paths, got {parents!r}")
    merged: dict[str, Any] = {}
    origins: Origins = {}
    for parent in parents:
        tree, found = _load(path.parent / parent, (*chain, path), f"{path}:{lines.get((DEFAULTS_KEY,), '?')}")
        merged = deep_merge(merged, tree)
        origins.update(found)
    origins.update({key: f"{path}:{line}{via}" for key, line in lines.items() if key[0] != DEFAULTS_KEY})
    return deep_merge(merged, raw), origins


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """A recipe's mapping and the 1-based line of every key path in it; duplicate keys and empty
    recipes are errors that name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); a recipe is YAML") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{path}: empty recipe (no keys); a recipe is a mapping, at least `{DEFAULTS_KEY}:` "
                              "naming the recipe it changes")
        lines: dict[tuple[str, ...], int] = {}
        _key_lines(node, (), lines, path)
        raw = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping, got {type(raw).__name__}")
    if not raw:
        raise ConfigError(f"{path}: empty recipe (no keys)")
    return raw, lines


def _key_lines(node: yaml.Node, prefix: tuple[str, ...], out: dict[tuple[str, ...], int], path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key, line = str(key_node.value), key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join((*prefix, key))
                raise ConfigError(f"{path}:{line}: duplicate key {dotted!r} (first set at line {seen[key]}); "
                                  "each key may appear once per mapping")
            seen[key] = line
            out[(*prefix, key)] = line
            _key_lines(value_node, (*prefix, key), out, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.setdefault((*prefix, str(i)), item.start_mark.line + 1)
            _key_lines(item, (*prefix, str(i)), out, path)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_override(tree: dict[str, Any], item: str) -> None:
    """Apply one `dotted.key=value` override to the raw mapping, in place."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected dotted.key=value, e.g. rl.clip_high=0.28")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node: Any = tree
    for depth, part in enumerate(parts[:-1]):
        node = _descend(node, part, ".".join(parts[: depth + 1]), parts[depth + 1])
    _assign(node, parts[-1], value, key)


def _descend(node: Any, part: str, where: str, next_part: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, where)]
    if not isinstance(node, dict):
        raise ConfigError(f"override path {where}: cannot descend into a {type(node).__name__}")
    if node.get(part) is None:
        node[part] = [] if next_part.isdigit() else {}
    return node[part]


def _assign(node: Any, part: str, value: Any, key: str) -> None:
    if isinstance(node, list):
        node[_list_index(node, part, key)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ConfigError(f"override {key}: parent is a {type(node).__name__}, not a mapping")


def _list_index(node: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override path {where}: index {part!r} is not in 0..{len(node) - 1}")
    return int(part)


def describe_error(err: dict[str, Any]) -> str:
    """One pydantic error as 'dotted.path = value: what is wrong (accepted: ...)'."""
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    dotted = ".".join(loc) or "(root)"
    if err["type"] == "extra_forbidden":
        accepted = accepted_keys(loc[:-1])
        hint = difflib.get_close_matches(loc[-1], accepted, n=1)
        did_you_mean = f" — did you mean '{hint[0]}'?" if hint else ""
        return f"{dotted}: unknown key{did_you_mean} (accepted here: {', '.join(accepted)})"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error":
        return msg
    info = field_info(loc)
    about = f" [{info.description}]" if info is not None and info.description else ""
    return f"{dotted} = {err.get('input')!r}: {msg}{about}"


def _walk(loc: Sequence[str]) -> tuple[type[BaseModel] | None, Any]:
    """The model class that owns the last key of `loc`, and that key's FieldInfo."""
    model: type[BaseModel] | None = RunConfig
    info = None
    for part in loc:
        if part.isdigit():
            continue
        if model is None or part not in model.model_fields:
            return None, None
        info = model.model_fields[part]
        model = nested_model(info.annotation)
    return model, info


def nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = nested_model(arg)
        if found is not None:
            return found
    return None


def accepted_keys(loc: Sequence[str]) -> list[str]:
    model, _ = _walk(loc)
    return sorted(model.model_fields) if model is not None else []


def field_info(loc: Sequence[str]) -> Any:
    return _walk(loc)[1]


def to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML, credentials redacted (nemo_qwenlong.redact): what run dirs and logs get."""
    return yaml.safe_dump(redact_tree(cfg.model_dump(mode="json")), sort_keys=False, default_flow_style=False)


def write_run_config(cfg: RunConfig, run_dir: str | os.PathLike) -> Path:
    """Write the resolved config into `run_dir` atomically (temp file + rename)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / RESOLVED_NAME
    atomic_write_text(target, to_yaml(cfg))
    return target
