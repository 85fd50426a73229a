"""What of a URL or a secret may be shown: in logs, stored errors, ops notices and the CLI.

A webhook's path, a Bot API token and a query string are secrets; a destination is shown by its
`endpoint` (scheme, host and port) and nothing more.
"""

from __future__ import annotations

from urllib.parse import urlsplit

INVALID = "<invalid url>"


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


def redact(text: str, *secrets: str) -> str:
    """Blank out secrets that a library may have put into an exception's message."""
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
