"""Which of the three inputs a file is: a text dump, a saved t.me/s page, or a Telegram Desktop export.

Decided from the first few kilobytes, so a gigabyte export is never read to be recognised:

- JSON (the first character after a BOM and white space is `{`) whose top-level keys include
  `messages` (one chat) or `chats` (the whole account) is an export; any other JSON is refused;
- HTML (`<!doctype html`, `<html`, or a `tgme_` class near the start) is a t.me/s page;
- anything with NUL bytes is binary and refused; an empty or blank file is refused;
- everything else is a text dump (whose decoding reports bad UTF-8 with its byte offset).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO, Literal

from bot.errors import InputError
from bot.parse.export import NOT_AN_EXPORT

Format = Literal["dump", "web", "export"]

SNIFF = 64 * 1024
_BOM = b"\xef\xbb\xbf"
_HTML = re.compile(rb"<!doctype\s+html|<html[\s>]|class=\"[^\"]*\btgme_", re.IGNORECASE)
# The key of a chat's messages or of the account's chats. It may sit after a long personal_information
# block, or be nested: the reader checks it is at the top.
_TOP_KEY = re.compile(rb'[{,]\s*"(messages|chats|left_chats)"\s*:')
_EXPECTED = "a text dump, a saved t.me/s page or a Telegram Desktop export (result.json)"


def detect(head: bytes, source: str) -> Format:
    """The format of a file from its first bytes (`SNIFF` of them are plenty); InputError if none."""
    body = head[len(_BOM) :] if head.startswith(_BOM) else head
    stripped = body.lstrip()
    if not stripped:
        raise InputError(f"{source}: empty file: expected {_EXPECTED}")
    if b"\x00" in body:
        raise InputError(f"{source}: binary data: expected {_EXPECTED}")
    if stripped[:1] in (b"{", b"["):
        if stripped[:1] == b"{" and _TOP_KEY.search(stripped):
            return "export"
        raise InputError(f"{source}: {NOT_AN_EXPORT}")
    if _HTML.search(stripped[:SNIFF]):
        return "web"
    return "dump"


def open_input(path: str | Path) -> BinaryIO:
    """The file opened for reading; a missing file, a directory or a refusal is one InputError."""
    try:
        return Path(path).open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a dump, page or export") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None
