"""Put a system under load: worker threads run transactions through its Units of Work.

Each worker runs its own list of jobs in order, each job one transaction: open a Unit of Work,
do the job's work, commit. An attempt that conflicts or deadlocks is retried (with a short,
jittered backoff: the database decides who goes first, the sleep only spreads the retries), up
to a number of attempts; an error is not retried. Workers start together at a barrier, so
that deliberate conflicts really meet.

What comes back counts every attempt and the final outcome of every transaction, the time of
each transaction (retries included) and of opening each Unit of Work (a pool wait shows
there), and the commits per key, which the suites compare with what the target counted.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exc as sa_exc

from uowstress.interrupts import raise_if_lost
from uowstress.metrics import OutcomeCounts
from uowstress.target import System
from uowstress.workload import ErrorKind, classify_error, refused_by_database

__all__ = ["Job", "LoadResult", "error_key", "run_load"]

_NS = 1_000_000_000


@dataclass(frozen=True)
class Job:
    """One transaction: ``work(uow)`` inside an opened Unit of Work, then commit.

    ``keys`` names the aggregates whose tally a commit adds one to (a read counts nothing).
    """

    label: str
    work: Callable[[Any], Any]
    keys: tuple[str, ...] = ()


@dataclass
class LoadResult:
    threads: int
    seconds: float = 0.0  # wall time from the barrier to the last worker's end
    transactions: OutcomeCounts = field(default_factory=OutcomeCounts)
    attempts: OutcomeCounts = field(default_factory=OutcomeCounts)
    latencies: list[float] = field(default_factory=list)  # per transaction, worker by worker
    acquire: list[float] = field(default_factory=list)  # opening each unit of work
    committed_by_key: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # kind: exception -> attempts
    pool_timeouts: int = 0
    # Transactions not run: after a unit of work waited the pool's whole timeout for a
    # connection, every worker stops after its current transaction (see run_load).
    not_run: int = 0

    @property
    def ops_per_second(self) -> float:
        """Committed transactions per wall second of the load."""
        return self.transactions.committed / self.seconds if self.seconds > 0 else 0.0


def _count(
    counts: OutcomeCounts, kind: ErrorKind | None, error: BaseException | None = None
) -> None:
    if kind is None:
        counts.committed += 1
    elif kind == "conflict":
        counts.conflicts += 1
        if error is not None and not refused_by_database(error):
            counts.system_conflicts += 1
    elif kind == "deadlock":
        counts.deadlocks += 1
    else:
        counts.errors += 1


_KEY_CHARS = 240


def error_key(kind: ErrorKind, error: BaseException) -> str:
    """How an error is named in the errors by kind: its kind and type, and for an error (not
    a conflict or deadlock, whose messages differ run to run) the first line of its message."""
    if kind != "error":
        return f"{kind}: {type(error).__name__}"
    lines = str(error).strip().splitlines()
    head = lines[0] if lines else ""
    if len(head) > _KEY_CHARS:
        # Cut between words and marked as cut: a key ending mid-word reads as the whole text.
        head = head[:_KEY_CHARS].rsplit(" ", 1)[0] + " …"
    return f"error: {type(error).__name__}: {head}" if head else f"error: {type(error).__name__}"


def _timed_out(error: BaseException) -> bool:
    current: BaseException | None = error
    for _ in range(10):
        if current is None:
            return False
        if isinstance(current, sa_exc.TimeoutError):
            return True
        current = current.__cause__ or current.__context__
    return False


class _Worker:
    def __init__(
        self,
        system: System,
        workload: object,
        jobs: Sequence[Job],
        attempts: int,
        backoff_s: float,
        seed: int,
        exhausted: threading.Event,
    ) -> None:
        self.system = system
        self.workload = workload
        self.jobs = jobs
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.rng = random.Random(seed)
        self.result = LoadResult(threads=1)
        self.crashed: BaseException | None = None
        # Set when the run is interrupted: the worker stops after its current transaction.
        self.stop = threading.Event()
        # Shared by the load's workers: set by the first that gave up waiting for a
        # connection. The pool is exhausted then (often by units of work that each ask for a
        # second connection while holding one), and every further try would wait as long.
        self.exhausted = exhausted
        # Set by the worker as it ends. Thread.join is not relied on when interrupted: on
        # Python 3.11 a KeyboardInterrupt inside join() can mark a running thread as stopped.
        self.finished = threading.Event()

    def attempt(self, job: Job) -> BaseException | None:
        """One try; the error it ended with, or None when it committed."""
        uow = self.system.unit_of_work()
        started = time.perf_counter_ns()
        try:
            uow.__enter__()
        except Exception as error:  # no connection: nothing to leave
            self.result.acquire.append((time.perf_counter_ns() - started) / _NS)
            return error
        self.result.acquire.append((time.perf_counter_ns() - started) / _NS)
        try:
            job.work(uow)
            uow.commit()
        except Exception as error:
            if not uow.__exit__(type(error), error, error.__traceback__):
                return error
            return None  # the unit of work swallowed it: nothing failed that we can see
        uow.__exit__(None, None, None)
        return None

    def run(self) -> None:
        result = self.result
        for done, job in enumerate(self.jobs):
            if self.stop.is_set():
                return
            if self.exhausted.is_set():
                result.not_run += len(self.jobs) - done
                return
            started = time.perf_counter_ns()
            final: ErrorKind | None = None
            for attempt in range(self.attempts):
                error = self.attempt(job)
                if error is None:
                    final = None
                    break
                final = classify_error(error, self.workload)
                result.errors[error_key(final, error)] += 1
                if _timed_out(error):
                    result.pool_timeouts += 1
                    self.exhausted.set()
                _count(result.attempts, final, error)
                if final == "error" or attempt == self.attempts - 1 or self.exhausted.is_set():
                    break
                ceiling = min(0.2, self.backoff_s * 2**attempt)
                time.sleep(self.rng.uniform(0, ceiling))
            if final is None:
                _count(result.attempts, None)
                result.committed_by_key.update(job.keys)
            # `error` is the last attempt's: None when it committed.
            _count(result.transactions, final, error)
            result.latencies.append((time.perf_counter_ns() - started) / _NS)

    def __call__(self, barrier: threading.Barrier) -> None:
        try:
            barrier.wait()
            self.run()
        except BaseException as crash:  # reported by run_load, never lost in a thread
            self.crashed = crash
        finally:
            self.finished.set()


def _wait_for(workers: Sequence[_Worker], *, interruptible: bool = False) -> None:
    # In short waits: a signal can land on a worker thread, and the main thread, which alone
    # runs Python's signal handlers, sees it only when it wakes.
    for worker in workers:
        while not worker.finished.wait(0.05):
            if interruptible:
                raise_if_lost()


def run_load(
    system: System,
    workload: object,
    jobs_per_thread: Sequence[Sequence[Job]],
    *,
    attempts: int = 3,
    backoff_s: float = 0.005,
    seed: int = 0,
) -> LoadResult:
    """Run each list of jobs on a thread of its own, all starting together. Once a unit of
    work has waited the pool's whole timeout for a connection, the workers stop after their
    current transaction (counted in `not_run`): a load on an exhausted pool would otherwise
    wait that long for every transaction left."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    if not jobs_per_thread:
        raise ValueError("run_load() needs at least one list of jobs (one per thread)")
    exhausted = threading.Event()
    workers = [
        _Worker(system, workload, jobs, attempts, backoff_s, seed * 1000 + index, exhausted)
        for index, jobs in enumerate(jobs_per_thread)
    ]
    barrier = threading.Barrier(len(workers) + 1)
    threads = [
        threading.Thread(target=worker, args=(barrier,), name=f"uowstress-load-{index}")
        for index, worker in enumerate(workers)
    ]
    try:
        for thread in threads:
            thread.start()
        barrier.wait()
        started = time.perf_counter_ns()
        _wait_for(workers, interruptible=True)
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): the workers stop after their current transaction and
        # are waited for, so that the cleanup that follows does not drop tables under them.
        barrier.abort()
        for worker in workers:
            worker.stop.set()
        _wait_for([w for w, thread in zip(workers, threads, strict=True) if thread.ident])
        raise
    for thread in threads:
        thread.join()
    total = LoadResult(threads=len(workers), seconds=(time.perf_counter_ns() - started) / _NS)
    for worker in workers:
        if worker.crashed is not None:
            raise worker.crashed
        part = worker.result
        total.transactions += part.transactions
        total.attempts += part.attempts
        total.latencies.extend(part.latencies)
        total.acquire.extend(part.acquire)
        total.committed_by_key.update(part.committed_by_key)
        total.errors.update(part.errors)
        total.pool_timeouts += part.pool_timeouts
        total.not_run += part.not_run
    return total
