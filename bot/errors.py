"""Errors the CLI turns into one line and an exit status, never a traceback; and how any error is
told in one line."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user (a file, a value, a URL): one line, exit status 2."""

    exit_code = 2


def first_line(exc: BaseException, width: int = 200) -> str:
    """The first line of an error's message (a driver's own, under SQLAlchemy's wrapper), or its type.

    Database and HTTP libraries put SQL, parameters and URLs on the lines after the first; a log line
    or a stored error needs only the reason.
    """
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:width] if text else type(exc).__name__
