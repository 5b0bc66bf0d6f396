"""Measurement and statistics: timers, percentiles, memory, CPU, descriptors, pool and query stats.

This module only measures and computes. Rendering belongs to ``uowstress.report`` and judging
against thresholds to ``uowstress.config``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import statistics
import threading
import time
import tracemalloc
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import psutil
from sqlalchemy import event, exc, text
from sqlalchemy.engine import Connection, CursorResult, Engine

__all__ = [
    "CpuTimes",
    "IndexUse",
    "LatencyStats",
    "MemorySampler",
    "OutcomeCounts",
    "PoolMonitor",
    "QueryTimer",
    "ResourceDelta",
    "ResourceSnapshot",
    "ScalabilityPoint",
    "Stopwatch",
    "cpu_times",
    "explain_statement",
    "index_use",
    "normalise_statement",
    "percentile",
    "pg_disable_seqscan",
    "scalability",
    "throughput",
    "timed",
]

_NS_PER_S = 1_000_000_000
# Distinguishes the info-dictionary entries of each QueryTimer / PoolMonitor instance
# (id() could be reused by a later instance and read stale entries).
_instance_numbers = itertools.count()


# --------------------------------------------------------------------------- statistics


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``samples`` (``q`` in [0, 100]).

    Linear interpolation between the closest ranks, as numpy's default ("linear") method:
    on the sorted samples ``x`` the position is ``h = (n - 1) * q / 100`` and the result is
    ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
    """
    if not samples:
        raise ValueError("percentile() of an empty sample: record at least one value first")
    if not 0.0 <= q <= 100.0:  # also rejects NaN
        raise ValueError(f"percentile q must be between 0 and 100, got {q!r}")
    return _percentile_of_sorted(sorted(samples), q)


def _percentile_of_sorted(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    fraction = position - lower
    low_value = ordered[lower]
    # Written as a + f*(b-a) so that equal neighbours give back exactly that value.
    return low_value + fraction * (ordered[upper] - low_value)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of a set of durations, in seconds.

    ``stdev`` is the population standard deviation (0.0 for a single sample): the samples are
    everything that was measured, not a draw from a larger population.
    """

    count: int
    mean: float
    min: float
    p50: float
    p95: float
    p99: float
    max: float
    stdev: float

    @classmethod
    def from_samples(cls, samples_seconds: Sequence[float]) -> LatencyStats:
        """Summarise ``samples_seconds``; an empty sequence raises ValueError."""
        if not samples_seconds:
            raise ValueError(
                "LatencyStats.from_samples() needs at least one duration; "
                "skip the statistics when nothing was timed"
            )
        values = sorted(samples_seconds)  # once, for all three percentiles
        return cls(
            count=len(values),
            mean=statistics.fmean(values),
            min=values[0],
            p50=_percentile_of_sorted(values, 50),
            p95=_percentile_of_sorted(values, 95),
            p99=_percentile_of_sorted(values, 99),
            max=values[-1],
            stdev=statistics.pstdev(values),
        )


@dataclass
class OutcomeCounts:
    """How operations ended.

    The four outcomes are exclusive: ``errors`` counts failures that were neither a conflict
    (serialization failure, lost optimistic-lock race, ...) nor a deadlock. Rates are fractions
    of ``total`` in [0, 1]. With ``total == 0`` every rate, ``success_rate`` included, is 0.0:
    a run that did nothing has shown no success, and should not look healthy when judged.

    ``system_conflicts`` is the part of ``conflicts`` that the system under test raised itself,
    with no database error behind it (an optimistic version check, usually); the rest the
    database refused (a lock wait, a busy database, a serialization failure). The remedies
    differ: the first are writers that did not queue for the aggregate they changed.
    """

    committed: int = 0
    conflicts: int = 0
    deadlocks: int = 0
    errors: int = 0
    system_conflicts: int = 0

    def __post_init__(self) -> None:
        for name in ("committed", "conflicts", "deadlocks", "errors", "system_conflicts"):
            if getattr(self, name) < 0:
                raise ValueError(f"OutcomeCounts.{name} must be >= 0, got {getattr(self, name)}")
        if self.system_conflicts > self.conflicts:
            raise ValueError(
                f"OutcomeCounts.system_conflicts ({self.system_conflicts}) is part of conflicts"
                f" ({self.conflicts}) and cannot exceed it"
            )

    @property
    def total(self) -> int:
        return self.committed + self.conflicts + self.deadlocks + self.errors

    @property
    def failed(self) -> int:
        """Operations that did not commit, whatever the reason."""
        return self.total - self.committed

    def _rate(self, part: int) -> float:
        total = self.total
        return part / total if total else 0.0

    @property
    def success_rate(self) -> float:
        return self._rate(self.committed)

    @property
    def error_rate(self) -> float:
        return self._rate(self.errors)

    @property
    def conflict_rate(self) -> float:
        return self._rate(self.conflicts)

    @property
    def deadlock_rate(self) -> float:
        return self._rate(self.deadlocks)

    def __add__(self, other: OutcomeCounts) -> OutcomeCounts:
        """Merge the counts of two workers or runs."""
        return OutcomeCounts(
            committed=self.committed + other.committed,
            conflicts=self.conflicts + other.conflicts,
            deadlocks=self.deadlocks + other.deadlocks,
            errors=self.errors + other.errors,
            system_conflicts=self.system_conflicts + other.system_conflicts,
        )


def throughput(operations: int, seconds: float) -> float:
    """Operations per second; ``seconds`` must be positive."""
    if operations < 0:
        raise ValueError(f"throughput() needs a non-negative operation count, got {operations}")
    if not seconds > 0:
        raise ValueError(
            f"throughput() needs a positive duration, got {seconds!r} s; "
            "time the operations with Stopwatch or timed()"
        )
    return operations / seconds


@dataclass(frozen=True)
class ScalabilityPoint:
    """Throughput at ``threads`` threads.

    ``efficiency`` is ``ops_per_second / (threads * ops_per_second at 1 thread)``: 1.0 is
    perfect linear scaling, 1/threads means no gain from the extra threads.
    """

    threads: int
    ops_per_second: float
    efficiency: float


def scalability(throughput_by_threads: Mapping[int, float]) -> list[ScalabilityPoint]:
    """Scaling efficiency per thread count, sorted by thread count.

    The 1-thread measurement is the baseline and must be present and positive.
    """
    for threads, tput in throughput_by_threads.items():
        if threads < 1:
            raise ValueError(f"scalability() thread counts must be >= 1, got {threads}")
        if tput < 0 or math.isnan(tput):
            raise ValueError(
                f"scalability() throughput at {threads} threads must be >= 0, got {tput!r}"
            )
    baseline = throughput_by_threads.get(1)
    if baseline is None:
        measured = sorted(throughput_by_threads)
        raise ValueError(
            "scalability() needs the 1-thread throughput as its baseline "
            f"(measured thread counts: {measured}); include 1 in the thread counts"
        )
    if baseline <= 0:
        raise ValueError(
            "scalability() needs a positive 1-thread throughput as its baseline, "
            f"got {baseline!r}; the single-threaded run completed no operation"
        )
    return [
        ScalabilityPoint(
            threads=threads,
            ops_per_second=tput,
            efficiency=tput / (threads * baseline),
        )
        for threads, tput in sorted(throughput_by_threads.items())
    ]


# --------------------------------------------------------------------------- timers


class Stopwatch:
    """A monotonic stopwatch on ``time.perf_counter_ns``; also a context manager."""

    def __init__(self) -> None:
        self._started_ns: int | None = None
        self._elapsed_ns = 0

    def start(self) -> Self:
        if self._started_ns is not None:
            raise RuntimeError("Stopwatch.start() called on a running stopwatch; stop() it first")
        self._started_ns = time.perf_counter_ns()
        return self

    def stop(self) -> float:
        """Stop and return the total elapsed seconds (accumulated over start/stop pairs)."""
        if self._started_ns is None:
            raise RuntimeError("Stopwatch.stop() called on a stopwatch that is not running")
        self._elapsed_ns += time.perf_counter_ns() - self._started_ns
        self._started_ns = None
        return self.elapsed_s

    @property
    def running(self) -> bool:
        return self._started_ns is not None

    @property
    def elapsed_ns(self) -> int:
        """Elapsed nanoseconds so far, including the current run if running."""
        if self._started_ns is None:
            return self._elapsed_ns
        return self._elapsed_ns + time.perf_counter_ns() - self._started_ns

    @property
    def elapsed_s(self) -> float:
        return self.elapsed_ns / _NS_PER_S

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def timed() -> Iterator[Stopwatch]:
    """Time a block: ``with timed() as sw: ...`` then read ``sw.elapsed_s``.

    The stopwatch is stopped even when the block raises, so failed operations are timed too.
    """
    watch = Stopwatch().start()
    try:
        yield watch
    finally:
        watch.stop()


# --------------------------------------------------------------------------- memory


class MemorySampler:
    """Samples the resident set size (RSS) of this process on a daemon thread.

    Use as a context manager (or ``start()`` / ``stop()``). A sample is taken on entry and on
    exit as well as every ``interval_s`` in between, so ``growth`` (last minus first sample)
    is exact even for blocks shorter than the interval. ``samples`` are
    ``(seconds since start, rss bytes)``.

    With ``trace_python=True`` the peak of Python allocations seen by tracemalloc is kept in
    ``python_peak``. tracemalloc is started and stopped only if it was not already tracing;
    when someone else is tracing it is left alone (its peak is not reset), so ``python_peak``
    is then the peak since that tracer's last reset, an upper bound for this block.
    """

    def __init__(self, interval_s: float = 0.05, *, trace_python: bool = False) -> None:
        if not interval_s > 0:
            raise ValueError(f"MemorySampler interval_s must be positive, got {interval_s!r}")
        self.interval_s = interval_s
        self.trace_python = trace_python
        self.python_peak: int | None = None
        self._process = psutil.Process()
        self._samples: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_ns = 0
        self._started_tracemalloc = False

    def _sample(self) -> None:
        rss = self._process.memory_info().rss
        elapsed = (time.perf_counter_ns() - self._started_ns) / _NS_PER_S
        with self._lock:
            self._samples.append((elapsed, rss))

    def _run(self) -> None:
        # Event.wait doubles as the sleep, so stop() interrupts it at once.
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("MemorySampler is already running; stop() it before restarting")
        if self.trace_python and not tracemalloc.is_tracing():
            tracemalloc.start()
            self._started_tracemalloc = True
        self._stop.clear()
        with self._lock:
            self._samples = []
        self.python_peak = None
        self._started_ns = time.perf_counter_ns()
        self._sample()
        self._thread = threading.Thread(
            target=self._run, name="uowstress-memory-sampler", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join()
        self._thread = None
        self._sample()
        if self.trace_python and tracemalloc.is_tracing():
            self.python_peak = tracemalloc.get_traced_memory()[1]
        if self._started_tracemalloc:
            tracemalloc.stop()
            self._started_tracemalloc = False

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def samples(self) -> list[tuple[float, int]]:
        with self._lock:
            return list(self._samples)

    @property
    def peak_rss(self) -> int:
        """Highest RSS sampled, in bytes (0 before the first sample)."""
        with self._lock:
            return max((rss for _, rss in self._samples), default=0)

    @property
    def growth(self) -> int:
        """Last sample minus first, in bytes; negative when memory was released."""
        with self._lock:
            if not self._samples:
                return 0
            return self._samples[-1][1] - self._samples[0][1]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds this process spent in user and kernel mode."""

    user_s: float
    system_s: float

    @property
    def total_s(self) -> float:
        return self.user_s + self.system_s


def cpu_times() -> CpuTimes:
    """CPU times of the current process (all threads) since it started."""
    times = psutil.Process().cpu_times()
    return CpuTimes(user_s=times.user, system_s=times.system)


# Descriptors are counted this many times, a moment apart, and the least count kept.
_FD_COUNTS = 3
_FD_PAUSE_S = 0.002


def _open_descriptors(process: psutil.Process) -> int:
    """Descriptors the process keeps open: the least of a few counts, so that one another
    thread holds for an instant (the memory sampler reads /proc every 50 ms) is not one."""
    # num_fds exists on POSIX only; Windows counts handles instead.
    counter = getattr(process, "num_fds", None) or getattr(process, "num_handles", None)
    if counter is None:
        return -1
    counts = []
    for attempt in range(_FD_COUNTS):
        if attempt:
            time.sleep(_FD_PAUSE_S)
        counts.append(int(counter()))
    return min(counts)


@dataclass(frozen=True)
class ResourceSnapshot:
    """Resource use of this process at one instant (see ``take()``).

    ``open_fds`` is -1 on a platform where psutil can count neither descriptors nor handles.
    """

    wall_s: float
    cpu_user_s: float
    cpu_system_s: float
    rss_bytes: int
    open_fds: int
    threads: int

    @classmethod
    def take(cls) -> ResourceSnapshot:
        process = psutil.Process()
        with process.oneshot():
            times = process.cpu_times()
            return cls(
                wall_s=time.perf_counter(),
                cpu_user_s=times.user,
                cpu_system_s=times.system,
                rss_bytes=process.memory_info().rss,
                open_fds=_open_descriptors(process),
                threads=process.num_threads(),
            )

    def __sub__(self, earlier: ResourceSnapshot) -> ResourceDelta:
        return ResourceDelta.between(earlier, self)


@dataclass(frozen=True)
class ResourceDelta:
    """Change of resource use between two snapshots (later minus earlier)."""

    wall_s: float
    cpu_user_s: float
    cpu_system_s: float
    rss_bytes: int
    open_fds: int
    threads: int

    @classmethod
    def between(cls, before: ResourceSnapshot, after: ResourceSnapshot) -> ResourceDelta:
        return cls(
            wall_s=after.wall_s - before.wall_s,
            cpu_user_s=after.cpu_user_s - before.cpu_user_s,
            cpu_system_s=after.cpu_system_s - before.cpu_system_s,
            rss_bytes=after.rss_bytes - before.rss_bytes,
            open_fds=after.open_fds - before.open_fds,
            threads=after.threads - before.threads,
        )

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_system_s

    @property
    def cpu_utilisation(self) -> float:
        """CPU seconds per wall second: 1.0 is one core busy, 2.0 two cores (0.0 if no time)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


# --------------------------------------------------------------------------- queries

_WHITESPACE = re.compile(r"\s+")
_STATEMENT_KEY_LENGTH = 200


def normalise_statement(statement: str) -> str:
    """The key QueryTimer groups a statement under: its first non-blank line, whitespace
    collapsed, cut to 200 characters (parameters are bound separately, so similar statements
    share a key)."""
    for line in statement.splitlines():
        collapsed = _WHITESPACE.sub(" ", line).strip()
        if collapsed:
            return collapsed[:_STATEMENT_KEY_LENGTH]
    return ""


class _EngineListener:
    """Listens to one engine's events at a time: `attach(engine)`, `detach()`, or a `with`
    block after `attach`. Subclasses name their listeners in `_listeners()`."""

    _engine: Engine | None

    def _listeners(self) -> dict[str, Any]:
        raise NotImplementedError

    def attach(self, engine: Engine) -> Self:
        name = type(self).__name__
        if self._engine is not None:
            raise RuntimeError(
                f"{name} is already attached to an engine; detach() it first "
                f"or use one {name} per engine"
            )
        for event_name, listener in self._listeners().items():
            event.listen(engine, event_name, listener)
        self._engine = engine
        return self

    def detach(self) -> None:
        engine = self._engine
        if engine is None:
            return
        for event_name, listener in self._listeners().items():
            event.remove(engine, event_name, listener)
        self._engine = None

    @property
    def attached(self) -> bool:
        return self._engine is not None

    def __enter__(self) -> Self:
        if self._engine is None:
            raise RuntimeError(
                f"attach(engine) the {type(self).__name__} before using it in a with block"
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.detach()


class QueryTimer(_EngineListener):
    """Times every statement an engine sends to its DBAPI cursor.

    Statements run on many threads at once: the start time lives in the connection's own
    ``info`` dictionary (a connection is used by one thread at a time) and the aggregates are
    updated under a lock. A statement that raises is not timed (SQLAlchemy fires no
    ``after_cursor_execute`` for it); an ``executemany`` counts as one statement.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._durations: dict[str, array[float]] = {}
        self._engine: Engine | None = None
        # Keyed per instance so two timers on one engine do not read each other's start.
        self._info_key = f"uowstress.query_timer.{next(_instance_numbers)}"

    def _listeners(self) -> dict[str, Any]:
        return {"before_cursor_execute": self._before, "after_cursor_execute": self._after}

    def _before(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        conn.info[self._info_key] = time.perf_counter_ns()

    def _after(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        end = time.perf_counter_ns()
        start = conn.info.pop(self._info_key, None)
        if start is None:  # attached between before and after of this statement
            return
        key = normalise_statement(statement)
        with self._lock:
            durations = self._durations.get(key)
            if durations is None:
                # array('d') stores 8 bytes a sample, so long runs do not skew memory metrics.
                durations = self._durations[key] = array("d")
            durations.append((end - start) / _NS_PER_S)

    def record(self, statement: str, seconds: float) -> None:
        """Add one timing by hand (for statements run outside an attached engine)."""
        key = normalise_statement(statement)
        with self._lock:
            self._durations.setdefault(key, array("d")).append(seconds)

    def stats(self) -> dict[str, LatencyStats]:
        """Latency statistics per normalised statement."""
        with self._lock:
            snapshot = {key: list(values) for key, values in self._durations.items()}
        return {key: LatencyStats.from_samples(values) for key, values in snapshot.items()}

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {key: len(values) for key, values in self._durations.items()}

    def all_stats(self) -> LatencyStats | None:
        """Statistics over every timed statement together (None if none was timed)."""
        with self._lock:
            values = [value for durations in self._durations.values() for value in durations]
        return LatencyStats.from_samples(values) if values else None

    @property
    def total_count(self) -> int:
        with self._lock:
            return sum(len(values) for values in self._durations.values())

    @property
    def total_seconds(self) -> float:
        with self._lock:
            return sum(sum(values) for values in self._durations.values())

    def reset(self) -> None:
        with self._lock:
            self._durations.clear()


# --------------------------------------------------------------------------- pool


@dataclass
class _PoolCounters:
    connects: int = 0
    checkouts: int = 0
    checkins: int = 0
    invalidations: int = 0
    soft_invalidations: int = 0
    closes: int = 0
    checked_out: int = 0
    peak_checked_out: int = 0
    peak_overflow: int = 0
    timeouts: int = 0
    acquire_s: list[float] = field(default_factory=list)


class PoolMonitor(_EngineListener):
    """Counts an engine's connection pool events.

    Definitions:

    - ``connects``: DBAPI connections opened while attached, plus connections opened
      before ``attach()``, each counted at its first checkout after it.
    - ``checkouts`` / ``checkins``: connections handed out / returned.
    - ``peak_checked_out``: most connections out at the same time.
    - ``peak_overflow``: most connections open beyond ``pool_size`` (QueuePool's
      ``overflow()`` sampled at each checkout); 0 if the pool never overflowed or is
      not a QueuePool.
    - ``efficiency``: checkouts per connection opened, the reuse ratio (1.0: no reuse,
      every checkout opened a connection; 10.0: each connection served ten checkouts);
      counting earlier connections in ``connects`` keeps it finite. 0.0 before any checkout.
    - acquire times, ``waits`` and ``timeouts``: the pool fires no event while a caller waits
      for a free connection, so these are measured around ``engine.connect()`` by
      ``checkout(engine)``, or by callers through ``record_wait()`` / ``record_timeout()``.
      ``waits`` counts acquisitions slower than ``wait_threshold_s`` (default 10 ms, above
      the cost of handing out a pooled connection, below a real wait).
    """

    _EVENTS = ("connect", "checkout", "checkin", "invalidate", "soft_invalidate", "close")

    def __init__(self, *, wait_threshold_s: float = 0.01) -> None:
        if wait_threshold_s < 0:
            raise ValueError(f"PoolMonitor wait_threshold_s must be >= 0, got {wait_threshold_s!r}")
        self.wait_threshold_s = wait_threshold_s
        self._lock = threading.Lock()
        self._counters = _PoolCounters()
        self._engine: Engine | None = None
        # Connection records this monitor has seen connect, to count reused connections
        # that were opened before attach() as opened (keeps efficiency finite and honest).
        self._known_info_key = f"uowstress.pool_monitor.{next(_instance_numbers)}"

    # ---- wiring

    def _listeners(self) -> dict[str, Any]:
        # Listening on the engine (not engine.pool) keeps the listeners across dispose(),
        # which replaces the pool.
        return {name: getattr(self, f"_on_{name}") for name in self._EVENTS}

    # ---- pool event handlers

    def _on_connect(self, dbapi_connection: Any, connection_record: Any) -> None:
        connection_record.info[self._known_info_key] = True
        with self._lock:
            self._counters.connects += 1

    def _on_checkout(
        self, dbapi_connection: Any, connection_record: Any, connection_proxy: Any
    ) -> None:
        opened_before_attach = self._known_info_key not in connection_record.info
        if opened_before_attach:
            connection_record.info[self._known_info_key] = True
        overflow = self._current_overflow()
        with self._lock:
            counters = self._counters
            if opened_before_attach:
                counters.connects += 1
            counters.checkouts += 1
            counters.checked_out += 1
            counters.peak_checked_out = max(counters.peak_checked_out, counters.checked_out)
            counters.peak_overflow = max(counters.peak_overflow, overflow)

    def _on_checkin(self, dbapi_connection: Any, connection_record: Any) -> None:
        with self._lock:
            self._counters.checkins += 1
            # Guards against connections checked out before attach() and returned after.
            self._counters.checked_out = max(0, self._counters.checked_out - 1)

    def _on_invalidate(
        self, dbapi_connection: Any, connection_record: Any, exception: BaseException | None
    ) -> None:
        with self._lock:
            self._counters.invalidations += 1

    def _on_soft_invalidate(
        self, dbapi_connection: Any, connection_record: Any, exception: BaseException | None
    ) -> None:
        with self._lock:
            self._counters.soft_invalidations += 1

    def _on_close(self, dbapi_connection: Any, connection_record: Any) -> None:
        with self._lock:
            self._counters.closes += 1

    def _current_overflow(self) -> int:
        engine = self._engine
        if engine is None:
            return 0
        overflow = getattr(engine.pool, "overflow", None)
        if overflow is None:
            return 0
        # QueuePool.overflow() is negative until pool_size connections exist.
        return max(0, int(overflow()))

    # ---- waits

    def record_wait(self, seconds: float) -> None:
        """Record how long acquiring one connection took."""
        with self._lock:
            self._counters.acquire_s.append(seconds)

    def record_timeout(self) -> None:
        """Record a connection request that gave up (sqlalchemy.exc.TimeoutError)."""
        with self._lock:
            self._counters.timeouts += 1

    @contextmanager
    def checkout(self, engine: Engine | None = None) -> Iterator[Connection]:
        """``engine.connect()`` timed: records the acquire time, or a timeout and re-raises.

        ``engine`` defaults to the attached one. The connection is closed on exit.
        """
        target = engine if engine is not None else self._engine
        if target is None:
            raise RuntimeError(
                "PoolMonitor.checkout() needs an engine: attach(engine) first or pass one"
            )
        started = time.perf_counter_ns()
        try:
            connection = target.connect()
        except exc.TimeoutError:
            self.record_timeout()
            raise
        self.record_wait((time.perf_counter_ns() - started) / _NS_PER_S)
        with connection:
            yield connection

    # ---- results

    def _read(self) -> _PoolCounters:
        with self._lock:
            counters = self._counters
            return _PoolCounters(
                connects=counters.connects,
                checkouts=counters.checkouts,
                checkins=counters.checkins,
                invalidations=counters.invalidations,
                soft_invalidations=counters.soft_invalidations,
                closes=counters.closes,
                checked_out=counters.checked_out,
                peak_checked_out=counters.peak_checked_out,
                peak_overflow=counters.peak_overflow,
                timeouts=counters.timeouts,
                acquire_s=list(counters.acquire_s),
            )

    @property
    def connects(self) -> int:
        return self._read().connects

    @property
    def checkouts(self) -> int:
        return self._read().checkouts

    @property
    def checkins(self) -> int:
        return self._read().checkins

    @property
    def invalidations(self) -> int:
        return self._read().invalidations

    @property
    def soft_invalidations(self) -> int:
        return self._read().soft_invalidations

    @property
    def closes(self) -> int:
        return self._read().closes

    @property
    def checked_out(self) -> int:
        return self._read().checked_out

    @property
    def peak_checked_out(self) -> int:
        return self._read().peak_checked_out

    @property
    def peak_overflow(self) -> int:
        return self._read().peak_overflow

    @property
    def timeouts(self) -> int:
        return self._read().timeouts

    @property
    def waits(self) -> int:
        return sum(1 for s in self._read().acquire_s if s > self.wait_threshold_s)

    def acquire_stats(self) -> LatencyStats | None:
        """Statistics of recorded acquire times (None if none was recorded)."""
        samples = self._read().acquire_s
        return LatencyStats.from_samples(samples) if samples else None

    @property
    def efficiency(self) -> float:
        counters = self._read()
        if counters.connects == 0:
            return 0.0
        return counters.checkouts / counters.connects

    def as_dict(self) -> dict[str, float | int]:
        """Every counter, for reports."""
        counters = self._read()
        return {
            "connects": counters.connects,
            "checkouts": counters.checkouts,
            "checkins": counters.checkins,
            "invalidations": counters.invalidations,
            "soft_invalidations": counters.soft_invalidations,
            "closes": counters.closes,
            "peak_checked_out": counters.peak_checked_out,
            "peak_overflow": counters.peak_overflow,
            "waits": sum(1 for s in counters.acquire_s if s > self.wait_threshold_s),
            "timeouts": counters.timeouts,
            "efficiency": counters.checkouts / counters.connects if counters.connects else 0.0,
        }


# --------------------------------------------------------------------------- index use


@dataclass(frozen=True)
class IndexUse:
    """What the database's planner would do for one query.

    ``backend`` is ``sqlite``, ``postgresql`` or ``mysql`` (MariaDB included); ``plan`` is the
    plan as the database gave it (JSON for PostgreSQL and MySQL). Tables are named as the
    query names them, so an alias is reported rather than the table behind it.

    ``full_scan`` is true when some table is read row by row without an index: SQLite
    "SCAN <table>" without "USING ... INDEX", PostgreSQL a "Seq Scan" node, MySQL/MariaDB
    access type "ALL"; ``full_scan_tables`` names them.

    ``index_walk_tables`` names tables read through every entry of an index (an index used
    for order, not to find rows): SQLite "SCAN <table> USING [COVERING] INDEX", PostgreSQL an
    Index / Index Only / Bitmap Heap Scan with no index condition, MySQL/MariaDB access type
    "index". Such a walk
    reads as much as a full scan, unless a LIMIT stops it early.

    PostgreSQL prefers a sequential scan on small tables even when an index fits; see
    ``pg_disable_seqscan``.
    """

    backend: str
    plan: str
    full_scan: bool
    full_scan_tables: tuple[str, ...]
    index_walk_tables: tuple[str, ...] = ()

    @property
    def reads_every_row(self) -> bool:
        """A table is read in full, directly or through a whole index."""
        return self.full_scan or bool(self.index_walk_tables)


def _index_use(backend: str, plan: str, scans: list[str], walks: list[str]) -> IndexUse:
    return IndexUse(
        backend=backend,
        plan=plan,
        full_scan=bool(scans),
        full_scan_tables=tuple(dict.fromkeys(scans)),
        index_walk_tables=tuple(dict.fromkeys(walks)),
    )


# "SCAN robots", "SCAN TABLE robots" (SQLite < 3.36), "SCAN r" for an alias, and with an
# index "SCAN robots USING [COVERING] INDEX ix". Lookups say "SEARCH" instead.
_SQLITE_SCAN = re.compile(r"^SCAN (?:TABLE )?(?P<table>\S+)(?P<rest>.*)$")
_SQLITE_INDEX = re.compile(r"\bUSING (?:COVERING )?INDEX\b")
_SQLITE_NOT_TABLES = ("CONSTANT", "SUBQUERY")


# Runs "<EXPLAIN prefix> <statement>" with the statement's parameters and returns the result.
_Explain = Callable[[str], CursorResult[Any]]


def _sqlite_index_use(explain: _Explain) -> IndexUse:
    rows = explain("EXPLAIN QUERY PLAN").all()
    lines = [str(row[-1]) for row in rows]
    scans: list[str] = []
    walks: list[str] = []
    for line in lines:
        match = _SQLITE_SCAN.match(line)
        if match is None:
            continue
        table = match.group("table")
        if table.upper() in _SQLITE_NOT_TABLES or table.startswith("("):
            continue  # constant rows and subquery results are not tables
        if _SQLITE_INDEX.search(match.group("rest")):
            walks.append(table)
        elif "USING" not in match.group("rest"):
            scans.append(table)
    return _index_use("sqlite", "\n".join(lines), scans, walks)


def _walk_pg(node: Mapping[str, Any], scans: list[str], walks: list[str]) -> None:
    kind = node.get("Node Type")
    table = str(node.get("Alias", node.get("Relation Name", "?")))
    if kind == "Seq Scan":
        scans.append(table)
    elif kind in ("Index Scan", "Index Only Scan") and "Index Cond" not in node:
        walks.append(table)
    elif kind == "Bitmap Heap Scan" and "Recheck Cond" not in node:
        walks.append(table)  # its Bitmap Index Scan child has no condition either
    for child in node.get("Plans", ()):
        _walk_pg(child, scans, walks)


def _postgresql_index_use(explain: _Explain) -> IndexUse:
    raw = explain("EXPLAIN (FORMAT JSON)").scalar_one()
    # psycopg decodes the json column; other drivers may hand back the text.
    document = json.loads(raw) if isinstance(raw, str) else raw
    scans: list[str] = []
    walks: list[str] = []
    for entry in document:
        _walk_pg(entry["Plan"], scans, walks)
    return _index_use("postgresql", json.dumps(document, indent=2), scans, walks)


def _classify_mysql(table: object, access_type: object, scans: list[str], walks: list[str]) -> None:
    kind = str(access_type or "").upper()
    if kind == "ALL":
        scans.append(str(table))
    elif kind == "INDEX":
        walks.append(str(table))


def _walk_mysql(node: Any, scans: list[str], walks: list[str]) -> None:
    if isinstance(node, Mapping):
        if "table_name" in node:
            _classify_mysql(node["table_name"], node.get("access_type"), scans, walks)
        for value in node.values():
            _walk_mysql(value, scans, walks)
    elif isinstance(node, list):
        for item in node:
            _walk_mysql(item, scans, walks)


def _mysql_index_use(explain: _Explain) -> IndexUse:
    scans: list[str] = []
    walks: list[str] = []
    try:
        raw = explain("EXPLAIN FORMAT=JSON").scalar_one()
    except exc.DBAPIError:
        # Servers without the JSON format: the classic tabular EXPLAIN has the same facts.
        # MySQL/MariaDB EXPLAIN does not abort a transaction, so the connection stays usable.
        result = explain("EXPLAIN")
        columns = list(result.keys())
        rows = [dict(zip(columns, row, strict=True)) for row in result.all()]
        for row in rows:
            _classify_mysql(row.get("table"), row.get("type"), scans, walks)
        plan = "\n".join(" | ".join(f"{key}={value}" for key, value in row.items()) for row in rows)
    else:
        document = json.loads(raw)
        _walk_mysql(document, scans, walks)
        plan = json.dumps(document, indent=2)
    return _index_use("mysql", plan, scans, walks)


def _read_plan(conn: Connection, explain: _Explain) -> IndexUse:
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return _sqlite_index_use(explain)
    if dialect == "postgresql":
        return _postgresql_index_use(explain)
    if dialect in ("mysql", "mariadb"):
        return _mysql_index_use(explain)
    raise ValueError(
        f"index_use() does not know how to read query plans of the {dialect!r} dialect; "
        "supported: sqlite, postgresql, mysql, mariadb"
    )


def index_use(conn: Connection, sql: str, params: Mapping[str, object] | None = None) -> IndexUse:
    """Ask the database how it would run ``sql`` (with ``:name`` parameters) and whether
    it would read a whole table.

    The query is explained, not run. Supported: SQLite, PostgreSQL, MySQL and MariaDB.
    """
    bound = dict(params) if params is not None else {}
    return _read_plan(conn, lambda prefix: conn.execute(text(f"{prefix} {sql}"), bound))


def explain_statement(conn: Connection, statement: str, parameters: Any = None) -> IndexUse:
    """``index_use`` for a statement as the driver received it (in the driver's own
    parameter style, e.g. captured from a ``before_cursor_execute`` event)."""
    return _read_plan(
        conn, lambda prefix: conn.exec_driver_sql(f"{prefix} {statement}", parameters)
    )


def pg_disable_seqscan(conn: Connection) -> None:
    """Discourage sequential scans for the rest of the current PostgreSQL transaction.

    With this, ``index_use`` answers "could an index be used" instead of "would the planner
    choose one", which on tiny test tables is usually no. A seq scan still shows where no
    index fits the query.
    """
    if conn.dialect.name != "postgresql":
        raise ValueError(
            f"pg_disable_seqscan() is for PostgreSQL connections, not {conn.dialect.name!r}"
        )
    conn.execute(text("SET LOCAL enable_seqscan = off"))
