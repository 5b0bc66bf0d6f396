"""Passwords of URLs hidden in text, before it reaches a console, a log or a report.

A module of its own, with no import beyond the standard library: error messages are written
with it before the report's renderers and statistics are imported, or when they never are.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["hide_passwords", "scrub"]

# scheme://user:password@host: the password, wherever a URL appears in a string.
_PASSWORD = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)([^\s@/]+)(?=@)")
# ...?password=secret (or passwd, sslpassword) in a URL's query string.
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|sslpassword)=)[^&\s'\"]+", re.IGNORECASE)


def scrub(value: Any) -> Any:
    """``value`` (a string, or lists and dicts of them) with every URL's password as ``***``."""
    if isinstance(value, str):
        return _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"\1***", value))
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    return value


def hide_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (for messages that
    quote what a test or a database said)."""
    scrubbed: str = scrub(text)
    return scrubbed
