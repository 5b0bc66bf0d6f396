"""A bound on how many examples Hypothesis keeps in memory during a machine run.

Hypothesis caches the record of each of its last 10,000 examples (choices, spans, mutation
groups), for its shrinker and to skip duplicates. A uowstress machine's example is long (tens
of steps, each drawing arguments): about 45 KB each, so a run of a few thousand examples held
over a hundred megabytes that it never used again. uowstress shrinks failures itself and its
examples are rarely duplicates, so during its machine runs the cache is bounded.

The size is a module constant of Hypothesis's engine, not public API: it is set only for the
duration of the run and restored afterwards; if a Hypothesis release drops the constant, the
bound lapses (memory grows as before) rather than anything failing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis.internal.conjecture import engine

EXAMPLES_KEPT = 256
_lock = threading.Lock()
_depth = 0
_saved: int | None = None


def bounded() -> bool:
    """Whether this Hypothesis has the constant the bound sets."""
    return isinstance(getattr(engine, "CACHE_SIZE", None), int)


@contextmanager
def bounded_example_cache(size: int = EXAMPLES_KEPT) -> Iterator[None]:
    """Within the block, Hypothesis runs keep at most `size` example records in memory."""
    global _depth, _saved
    if not bounded():
        yield
        return
    with _lock:
        if _depth == 0:
            _saved = engine.CACHE_SIZE
            engine.CACHE_SIZE = min(size, _saved)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                engine.CACHE_SIZE = _saved
                _saved = None
