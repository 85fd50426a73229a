"""Database URLs as users write them, mapped to the one driver tgsentinel ships (psycopg 3)."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError

# Every spelling of PostgreSQL a user may copy from another tool's docs, Heroku or a libpq URI.
_POSTGRES = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "postgres+psycopg2"}


def parse(url: str) -> URL:
    """The URL, with any PostgreSQL spelling mapped to psycopg 3; ValueError, without the password,
    for one that cannot work."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        if isinstance(exc, ValueError) and "int()" in str(exc):
            raise ValueError(f"{scheme}://...: the port is not a number") from None
        raise ValueError(
            "not a database URL (e.g. sqlite:///data/tgsentinel.db or postgresql://user@host/db)"
        ) from None
    if parsed.drivername in _POSTGRES:
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite":
        return parsed
    raise ValueError(f"unsupported database {scheme}:// (use sqlite:/// or postgresql://)")


def database_url(url: str) -> str:
    """`url` normalised, as a string (password kept: this is what the engine connects with)."""
    return parse(url).render_as_string(hide_password=False)
