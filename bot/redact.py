"""What of a URL or a secret may be shown: in logs, stored errors, ops notices and the CLI.

A webhook's path, a Bot API token and a query string are secrets; a destination is shown by its
`endpoint` (scheme, host and port) and nothing more.

`SECRETS` is the process's one redactor. It learns every secret the configuration holds (the
settings' own, and each destination's when its sender is built) and blanks them out of any text,
in every form an echo may carry them: as given, percent-encoded (any hex case), JSON-escaped,
HTML-escaped. Logging runs every record through it (`RedactFilter`), the outbox every stored error
and ops notice, the CLI what it prints from the store.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

INVALID = "<invalid url>"
MASK = "***"
# Shorter values are not learnt: blanking every "prod" or "/x" out of every log line would make the
# log unreadable and protect nothing worth protecting.
MIN_LENGTH = 5
# A path segment this long is a secret of its own (an echo may quote just the token), unless it is
# one of the providers' public words.
SEGMENT = 8
_PUBLIC_SEGMENTS = frozenset({"services", "webhooks", "sendmessage"})
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")


def endpoint(url: str) -> str:
    """`scheme://host[:port]` only."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return INVALID
    if not parts.scheme or not host:
        return INVALID
    return f"{parts.scheme}://{host}{port}"


def url_secrets(url: str) -> list[str]:
    """What of a URL is secret: its path, its query (and each value in it), its password, and every
    long path segment. Scheme, host and port are not (`endpoint` shows them)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]  # a URL we cannot split: all of it
    out = [parts.password or "", parts.query, parts.fragment]
    if parts.path not in ("", "/"):
        out.append(parts.path)
        out.extend(
            seg
            for seg in parts.path.split("/")
            if len(seg) >= SEGMENT and seg.lower() not in _PUBLIC_SEGMENTS
        )
    out.extend(value for _, value in parse_qsl(parts.query))
    if parts.query:
        out.append(f"{parts.path}?{parts.query}")
    return [s for s in out if s]


def value_secrets(value: str) -> list[str]:
    """A token or header value: all of it, and each long word of it (`Bearer TOKEN` echoed as TOKEN)."""
    return [value, *(word for word in value.split() if len(word) >= SEGMENT)]


def _forms(secret: str) -> set[str]:
    """The ways an echo may spell `secret`."""
    plain = {secret, unquote(secret)}
    forms = set(plain)
    for s in plain:
        forms |= {quote(s), quote(s, safe=""), quote_plus(s), quote_plus(s, safe="/")}
        forms |= {html.escape(s), html.escape(s, quote=False)}
    for s in list(forms):
        escaped = json.dumps(s, ensure_ascii=False)[1:-1]
        forms |= {escaped, escaped.replace("/", "\\/"), json.dumps(s)[1:-1]}
    return {f for f in forms if len(f) >= MIN_LENGTH}


def _pattern(form: str) -> str:
    """`form` as a regex; percent-escapes match in either hex case (`%2F` and `%2f`)."""
    out, last = [], 0
    for m in _PERCENT.finditer(form):
        out.append(re.escape(form[last : m.start()]))
        out.append("%(?i:" + m.group()[1:] + ")")
        last = m.end()
    out.append(re.escape(form[last:]))
    return "".join(out)


class Redactor:
    """Blanks out every secret it has learnt, in every spelling `_forms` knows."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._regex: re.Pattern[str] | None = None
        self.learn(*secrets)

    def learn(self, *secrets: str | None) -> None:
        """Remember more secrets (never forgotten: an old URL may still be echoed after a reload)."""
        new: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_LENGTH:
                new |= _forms(secret)
        with self._lock:
            if not new <= self._forms:
                self._forms |= new
                self._regex = None  # compiled at the next use: a load learns many at once

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._regex is None and self._forms:
                self._regex = _compile(self._forms)
            return self._regex

    def __call__(self, text: str, *extra: str) -> str:
        """`text` without any learnt secret, nor any of `extra` (learnt too: a secret is a secret)."""
        if extra:
            self.learn(*extra)
        if not text:
            return text
        regex = self._compiled()
        return text if regex is None else regex.sub(MASK, text)

    def excerpt(self, text: str, width: int, *extra: str) -> str:
        """The first `width` characters of `text`, redacted, with no secret's beginning left where the
        cut fell through it."""
        cut = text[:width]
        out = self(cut, *extra)
        if len(text) > width:
            tail = out[-SEGMENT * 16 :]
            for form in sorted(self._forms, key=len, reverse=True):
                for n in range(min(len(form) - 1, len(tail)), MIN_LENGTH - 1, -1):
                    if tail.endswith(form[:n]):
                        return out[:-n] + MASK
        return out


def _compile(forms: set[str]) -> re.Pattern[str] | None:
    if not forms:
        return None
    # Longest first, so a path is blanked whole rather than around a segment of it.
    return re.compile("|".join(_pattern(f) for f in sorted(forms, key=len, reverse=True)))


SECRETS = Redactor()


def redact(text: str, *secrets: str) -> str:
    """`text` without any secret the process knows, nor any of `secrets`."""
    return SECRETS(text, *secrets)


class RedactFilter(logging.Filter):
    """On the root handler: every record leaves with its message, traceback and stack redacted."""

    _formatter = logging.Formatter()

    def __init__(self, redactor: Redactor = SECRETS) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # Arguments that do not fit the format: logging itself would print a "Logging error";
            # a filter that raised would break the caller instead.
            message = f"{record.msg} {record.args!r}"
        record.msg = self.redactor(message)
        record.args = None
        if record.exc_info:
            # Formatted here, so the traceback (which may quote a URL) is redacted too; formatters
            # print exc_text when there is no exc_info.
            record.exc_text = self._formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        return True
