"""Shared pieces of the config schema: the strict base class and the field helper."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


INFORMATIONAL = "informational"  # json_schema_extra key: why no code outside config/ reads the field


def field(default: Any, description: str, *, informational: str | None = None, **constraints: Any) -> Any:
    """A schema field: its one default, a one-line description and its range/choices. Every field is read by
    the code outside config/ (tests/config/test_dead_fields.py), or says here why not: `informational`, the
    reason, shown after the description in `config fields`."""
    if informational is None:
        return Field(default, description=description, **constraints)
    return Field(default, description=f"{description} [informational: {informational}]",
                 json_schema_extra={INFORMATIONAL: informational}, **constraints)


def section(factory: type[Section], description: str) -> Any:
    """A nested section, built from its own defaults."""
    return Field(default_factory=factory, description=description)
