"""JSON payloads (configurations, metrics) with size and nesting limits.

The limits are checked before any parsing, so a hostile or runaway payload costs one linear
scan, never a deep recursion or a large allocation inside the JSON parser.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, NoReturn

from humanoid_training.persistence.errors import PayloadError

DEFAULT_MAX_BYTES = 1_048_576
DEFAULT_MAX_DEPTH = 32

_WHAT_TO_DO = (
    "raise the codec's max_bytes (uowstress: --target-option max_payload_bytes=N) or shrink"
    " the payload"
)

# A complete JSON string (escapes included), a bracket, or a lone quote that starts an
# unterminated string; brackets inside strings are thereby skipped when measuring depth.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|"', re.DOTALL)


def _refuse_constant(name: str) -> NoReturn:
    raise PayloadError(
        f"JSON payload contains {name}, which is not valid JSON; store finite numbers only"
    )


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        # e.g. 1e400: valid JSON syntax, but it would come back as infinity.
        raise PayloadError(
            f"JSON number {literal[:40]} is out of the range of a float; store finite numbers"
            " within about 1.8e308"
        )
    return value


# A path as a linked list (key, parent), so that extending it costs O(1) at any depth.
_Path = tuple[str | int, "_Path"] | None


def _path_text(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        key, path = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "$" + "".join(reversed(parts))


@dataclass(frozen=True)
class JsonCodec:
    """Encodes and decodes JSON payloads, refusing those beyond the configured limits."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_depth < 1:
            raise ValueError(
                f"JsonCodec limits must be positive (max_bytes={self.max_bytes},"
                f" max_depth={self.max_depth}); use at least 1 for each"
            )

    def encode(self, value: object) -> str:
        """Compact, key-sorted JSON text of `value`; raises PayloadError when it is refused."""
        self._check_value(value)
        try:
            # Cycles are impossible after _check_value (they exceed any depth limit).
            encoded = json.dumps(
                value,
                separators=(",", ":"),
                sort_keys=True,
                allow_nan=False,
                ensure_ascii=False,
                check_circular=False,
            )
        except ValueError as error:  # e.g. an int beyond Python's digit limit
            raise PayloadError(f"value cannot be encoded as JSON: {error}") from error
        except RecursionError:
            raise self._parser_depth_error() from None
        try:
            size = len(encoded.encode("utf-8"))
        except UnicodeEncodeError as error:
            raise PayloadError(
                f"value holds text that is not valid Unicode ({error.reason} at character"
                f" {error.start} of the JSON text); remove lone surrogate characters"
            ) from None
        self._check_size(size)
        return encoded

    def decode(self, text: str | bytes) -> Any:
        """The value of a JSON text; raises PayloadError for refused or invalid payloads."""
        if isinstance(text, bytes):
            self._check_size(len(text))
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as error:
                raise PayloadError(
                    f"JSON payload is not valid UTF-8 ({error.reason} at byte {error.start});"
                    " store it as UTF-8 text"
                ) from None
        else:
            # Measured as stored: UTF-8 bytes ("surrogatepass" so that measuring never fails).
            self._check_size(len(text.encode("utf-8", "surrogatepass")))
        self._check_text_depth(text)
        try:
            return json.loads(text, parse_constant=_refuse_constant, parse_float=_parse_float)
        except json.JSONDecodeError as error:
            raise PayloadError(
                f"invalid JSON payload: {error.msg} (line {error.lineno}, column {error.colno},"
                f" character {error.pos}); fix the stored text or the code that wrote it"
            ) from None
        except ValueError as error:  # e.g. an integer beyond Python's digit limit
            raise PayloadError(f"JSON payload cannot be decoded: {error}") from None
        except RecursionError:
            raise self._parser_depth_error() from None

    def _check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise PayloadError(
                f"JSON payload is {size} bytes > limit {self.max_bytes} bytes; {_WHAT_TO_DO}"
            )

    def _depth_error(self, depth: int, where: str) -> PayloadError:
        return PayloadError(
            f"JSON payload nesting depth {depth} > limit {self.max_depth} ({where}); {_WHAT_TO_DO}"
        )

    def _parser_depth_error(self) -> PayloadError:
        # Only reachable when max_depth is above what Python's json module can nest.
        return PayloadError(
            f"JSON payload is nested deeper than Python's json module can handle, although"
            f" within max_depth={self.max_depth}; set max_depth to a few hundred at most"
        )

    def _check_text_depth(self, text: str) -> None:
        if text.count("[") + text.count("{") <= self.max_depth:
            return  # too few brackets to nest beyond the limit: skip the scan
        depth = 0
        for match in _TOKENS.finditer(text):
            token = match.group()
            if token in "[{":
                depth += 1
                if depth > self.max_depth:
                    raise self._depth_error(depth, f"at character {match.start()}")
            elif token in "]}":
                depth -= 1
            elif token == '"':
                # Unterminated string: the parser reports it with its position.
                return

    def _check_value(self, value: object) -> None:
        # Iterative walk: a deep or self-referencing value never reaches Python's recursion
        # limit. Counting nodes bounds the work on values sharing sub-objects, since every
        # node costs at least one byte of output.
        stack: list[tuple[object, int, _Path]] = [(value, 0, None)]
        nodes = 0
        while stack:
            item, depth, path = stack.pop()
            nodes += 1
            if nodes > self.max_bytes:
                raise PayloadError(
                    f"JSON payload has more than {self.max_bytes} values, so it exceeds the"
                    f" limit of {self.max_bytes} bytes; {_WHAT_TO_DO}"
                )
            if item is None or isinstance(item, bool | int | str):
                continue
            if isinstance(item, float):
                if not math.isfinite(item):
                    raise PayloadError(
                        f"value at {_path_text(path)} is {item}, which JSON cannot represent;"
                        " store a finite number or null"
                    )
                continue
            if isinstance(item, dict | list | tuple):
                if depth + 1 > self.max_depth:
                    raise self._depth_error(depth + 1, f"at {_path_text(path)}")
                if isinstance(item, dict):
                    for key, child in item.items():
                        if not isinstance(key, str):
                            raise PayloadError(
                                f"object key {key!r} at {_path_text(path)} is of type"
                                f" {type(key).__name__}; JSON object keys must be strings"
                            )
                        stack.append((child, depth + 1, (key, path)))
                else:
                    stack.extend(
                        (child, depth + 1, (index, path)) for index, child in enumerate(item)
                    )
                continue
            raise PayloadError(
                f"value at {_path_text(path)} is of type {type(item).__name__}, which JSON cannot"
                " represent; convert it to a string, number, boolean, null, list or dict"
            )
