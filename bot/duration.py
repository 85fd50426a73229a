"""Durations as users write them ('30s', '10m', '2h', '1d', '1w'): for rules, silences and settings."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """Seconds from '30s', '10m', '2h', '1d', '1w', or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is like 30s, 10m, 2h or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"a duration is like 30s, 10m, 2h or 1d, not {value!r}")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[smhdw]?\s*$"},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": "30s, 10m, 2h, 1d (or seconds)",
        }
    ),
]
