"""Human-readable field reference generated from the schema (`nemo-qwenlong config fields`)."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from nemo_qwenlong.config.loader import nested_model
from nemo_qwenlong.config.schema import RunConfig


def field_table(section: str | None = None) -> str:
    """One line per field: dotted name, type, default, range, description."""
    model: type[BaseModel] = RunConfig
    prefix = ""
    for part in (section.split(".") if section else []):
        sub = nested_model(model.model_fields[part].annotation) if part in model.model_fields else None
        if sub is None:
            raise KeyError(f"no config section {section!r}; sections: {', '.join(_sections(RunConfig))}")
        model, prefix = sub, f"{prefix}{part}."
    return "".join(_lines(model, prefix))


def _sections(model: type[BaseModel]) -> list[str]:
    return [n for n, f in model.model_fields.items() if nested_model(f.annotation) is not None]


def _lines(model: type[BaseModel], prefix: str) -> typing.Iterator[str]:
    for name, info in model.model_fields.items():
        nested = nested_model(info.annotation)
        if nested is not None and not _is_optional(info.annotation) and typing.get_origin(info.annotation) is not list:
            yield f"\n[{prefix}{name}] {info.description or ''}\n"
            yield from _lines(nested, f"{prefix}{name}.")
            continue
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
