"""Human-readable field reference generated from the schema (`nemo-qwenlong config fields`)."""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from nemo_qwenlong.config.loader import nested_model
from nemo_qwenlong.config.schema import RunConfig


def field_table(section: str | None = None) -> str:
    """One line per field: dotted name, type, default, range, description; `section` a dotted section (its
    fields) or a single field (its line). An unknown name raises KeyError with the closest keys."""
    model: type[BaseModel] = RunConfig
    prefix = ""
    parts = section.split(".") if section else []
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        sub = nested_model(info.annotation) if info is not None else None
        if info is not None and sub is None and i == len(parts) - 1:  # a field, not a section
            return "".join(_field_line(prefix, part, info))
        if sub is None:
            raise KeyError(unknown_key_message(str(section)))
        model, prefix = sub, f"{prefix}{part}."
    return "".join(_lines(model, prefix))


def dotted_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every section and field as `config fields` names them, e.g. rl, rl.clip_high, curriculum.stages.steps."""
    keys = []
    for name, info in model.model_fields.items():
        keys.append(f"{prefix}{name}")
        sub = nested_model(info.annotation)
        if sub is not None:
            keys += dotted_keys(sub, f"{prefix}{name}.")
    return keys


def unknown_key_message(name: str) -> str:
    """`no config section or field 'rl.clip_hgh'; did you mean rl.clip_high?`, and the top-level sections."""
    close = difflib.get_close_matches(name, dotted_keys(), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"no config section or field {name!r}{hint} (sections: {', '.join(_sections(RunConfig))})"


def _sections(model: type[BaseModel]) -> list[str]:
    return [n for n, f in model.model_fields.items() if nested_model(f.annotation) is not None]


def _lines(model: type[BaseModel], prefix: str) -> typing.Iterator[str]:
    for name, info in model.model_fields.items():
        nested = nested_model(info.annotation)
        if nested is not None and not _is_optional(info.annotation) and typing.get_origin(info.annotation) is not list:
            yield f"\n[{prefix}{name}] {info.description or ''}\n"
            yield from _lines(nested, f"{prefix}{name}.")
            continue
        yield from _field_line(prefix, name, info)


def _field_line(prefix: str, name: str, info: FieldInfo) -> typing.Iterator[str]:
    yield f"{prefix}{name:<28} {_type_name(info.annotation):<34} default={_default(info)!s:<14}{_range(info)}  {info.description or ''}\n"


def _is_optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation).replace("typing.", "")
    for module in ("nemo_qwenlong.config.training.", "nemo_qwenlong.config.pipeline.", "nemo_qwenlong.config.operations."):
        text = text.replace(module, "")
    return text


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        value = info.default_factory()
        return f"[{len(value)} items]" if isinstance(value, list) and value else value
    return info.default


def _range(info: FieldInfo) -> str:
    bounds = []
    for meta in info.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sym}{getattr(meta, attr)}")
    return f" [{', '.join(bounds)}]" if bounds else ""
