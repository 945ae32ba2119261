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

DEFAULTS_KEY = "defaults"
RESOLVED_NAME = "config.yaml"


class ConfigError(ValueError):
    """A recipe or override that does not validate; the message lists every problem."""


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Resolve a recipe file (or the schema defaults when `path` is None) plus overrides."""
    tree = load_tree(Path(path)) if path is not None else {}
    if overrides:
        # Overrides may reach into schema defaults (e.g. curriculum.stages.1.steps), so resolve them
        # on the full default tree with the recipe merged in.
        tree = deep_merge(RunConfig().model_dump(mode="python"), tree)
    for item in overrides:
        apply_override(tree, item)
    return validate_tree(tree, source=str(path) if path else "<defaults>")


def validate_tree(tree: dict[str, Any], source: str = "<config>") -> RunConfig:
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        lines = [describe_error(e) for e in err.errors()]
        raise ConfigError(f"{source}: {len(lines)} problem(s)\n" + "\n".join(f"  - {ln}" for ln in lines)) from None


def load_tree(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The merged mapping of a recipe and everything it inherits."""
    path = path.resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise ConfigError(f"defaults cycle: {cycle}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping, got {type(raw).__name__}")
    parents = raw.pop(DEFAULTS_KEY, None) or []
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: '{DEFAULTS_KEY}' must be a path or a list of paths, got {parents!r}")
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = deep_merge(merged, load_tree(path.parent / parent, (*_chain, path)))
    return deep_merge(merged, raw)


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
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=False)


def write_run_config(cfg: RunConfig, run_dir: str | os.PathLike) -> Path:
    """Write the resolved config into `run_dir` atomically (temp file + rename)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / RESOLVED_NAME
    atomic_write_text(target, to_yaml(cfg))
    return target
