"""Shared pieces of the config schema: the strict base class and the field helper."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


def field(default: Any, description: str, **constraints: Any) -> Any:
    """A schema field: its one default, a one-line description and its range/choices."""
    return Field(default, description=description, **constraints)


def section(factory: type[Section], description: str) -> Any:
    """A nested section, built from its own defaults."""
    return Field(default_factory=factory, description=description)
