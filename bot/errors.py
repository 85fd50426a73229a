"""Errors the CLI turns into one line and an exit status, never a traceback."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user (a file, a value, a URL): one line, exit status 2."""

    exit_code = 2


class FindingsError(Exception):
    """Validation findings (e.g. `rules check`): lines already printed, exit status 1."""

    exit_code = 1
