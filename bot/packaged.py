"""Files the package ships beside its code: the Alembic migrations and the example rules.

A wheel holds them inside the package (`bot/migrations`, `bot/defaults`, mapped in pyproject.toml);
a checkout, and an editable install of it, keeps them at its top level (`alembic/`, `rules/`).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _shipped(inside: str, checkout: str) -> Path:
    installed = _PACKAGE / inside
    return installed if installed.is_dir() else _PACKAGE.parent / checkout


def migrations() -> Path:
    """The Alembic script directory."""
    return _shipped("migrations", "alembic")


def defaults() -> Path:
    """The example rules directory: channels, rules, destinations, `schema.json` and `examples/`."""
    return _shipped("defaults", "rules")


def env_example() -> Path:
    """`.env.example`: every setting, commented out, with what it does."""
    return _shipped("envfile", ".") / ".env.example"
