"""Boundary check for the closed option sets (str Enums) of the VDM package."""

from __future__ import annotations

import enum
from typing import TypeVar

E = TypeVar("E", bound=enum.Enum)


def parse_choice(value: object, kind: type[E], name: str) -> E:
    """``value`` as a member of ``kind``; raises a ValueError naming ``name`` and listing the choices."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in kind)
        raise ValueError(f"{name} = {value!r} is not valid: choose one of {choices}") from None
