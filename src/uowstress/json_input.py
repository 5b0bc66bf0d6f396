"""JSON read back from files a user can edit or damage: reports, baselines, the run history
and reproducers. Every way ``json.loads`` refuses a text becomes one error saying what is
wrong with it, for its reader to name the file and what to do."""

from __future__ import annotations

import json
import sys

__all__ = ["NotJson", "parse_json"]


class NotJson(ValueError):
    """The text is not JSON uowstress can read; the message says why, without the file."""


def parse_json(text: str) -> object:
    """The value ``text`` holds; NotJson when it cannot be read."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        # Some of json's messages end with "at" already ("Unterminated string starting at").
        said = error.msg.removesuffix(" at")
        raise NotJson(f"{said} at line {error.lineno}, column {error.colno}") from None
    except RecursionError:
        # The parser recurses once per level: no file uowstress writes comes near the limit.
        raise NotJson("arrays or objects nested too deeply to read") from None
    except ValueError:
        # The only other refusal: an integer longer than Python converts from text.
        limit = sys.get_int_max_str_digits()
        raise NotJson(f"a number of more than {limit} digits") from None
