"""The Unit of Work on its own: sequential and concurrent transactions, memory under load,
and connection handling (normal work, exceptions inside the block, rapid open and close).

Sizes come from performance_config.yaml (workloads); every scenario runs once per database.
"""

from __future__ import annotations

import gc
import random

from uowstress.config import BYTES_PER_MB
from uowstress.load import Job
from uowstress.metrics import ResourceSnapshot
from uowstress.scenario import Scenario


def test_basic_transaction_performance(perf: Scenario) -> None:
    """Sequential transactions, one after the other, each changing one aggregate."""
    keys = perf.create(10)
    count = perf.workloads.sequential_transactions
    perf.run([[perf.change(keys[i % len(keys)]) for i in range(count)]])
    perf.check_tally()
    perf.check_invariants()
    perf.check_connections()
    assert perf.transactions.committed == count


def test_concurrent_transaction_stress(perf: Scenario) -> None:
    """Threads each changing an aggregate of their own, and one transaction in three one of
    two hot aggregates shared by all: deliberate conflicts, retried."""
    threads = perf.workloads.concurrent_threads
    per_thread = perf.workloads.transactions_per_thread
    hot = perf.create(2)
    own = perf.create(threads)
    rng = random.Random(7)
    perf.run(
        [
            [perf.change(rng.choice(hot) if i % 3 == 0 else own[t]) for i in range(per_thread)]
            for t in range(threads)
        ]
    )
    perf.check_contention()
    perf.check_tally()
    perf.check_invariants()
    perf.check_connections()


def test_memory_usage_under_load(perf: Scenario) -> None:
    """Many operations creating short-lived aggregates and objects; memory kept afterwards."""
    operations = perf.workloads.memory_operations
    keys = perf.create(20)
    gc.collect()
    before = ResourceSnapshot.take().rss_bytes
    rng = random.Random(11)
    jobs: list[Job] = []
    for i in range(operations):
        roll = i % 10
        if roll < 2:
            jobs.append(perf.create_job(perf.new_keys(1)))
        elif roll < 6:
            jobs.append(perf.change(rng.choice(keys)))
        else:
            jobs.append(perf.read(rng.choice(keys)))
    perf.run([jobs[i::4] for i in range(4)])
    gc.collect()
    retained = (ResourceSnapshot.take().rss_bytes - before) / BYTES_PER_MB
    perf.metric("retained_mb", retained)
    perf.metric("retained_kb_per_operation", retained * 1024 / operations)
    perf.check_tally()
    perf.check_connections()


class _Deliberate(Exception):
    """Raised inside a unit of work to see that it rolls back."""


def _raising(job: Job) -> Job:
    def work(uow: object) -> None:
        job.work(uow)
        raise _Deliberate("raised inside the unit of work on purpose")

    return Job("raise", work)  # counts nothing: it must leave nothing behind


def test_database_connection_handling(perf: Scenario) -> None:
    """Normal work, exceptions inside the block, and rapid open/close: every connection comes
    back, nothing of a failed block stays, no descriptor leaks."""
    keys = perf.create(5)
    # Counted from an empty pool, as after the load: its own connections are not a leak.
    perf.system.engine.dispose()
    fds_before = ResourceSnapshot.take().open_fds
    perf.run([[perf.change(keys[i % 5]) for i in range(50)]])
    failed = perf.run([[_raising(perf.change(keys[i % 5])) for i in range(50)]], counted=False)
    perf.check(
        "exceptions propagate and roll back",
        failed.transactions.errors == 50
        and failed.transactions.committed == 0
        and not failed.committed_by_key,
        f"{failed.transactions.errors} of 50 deliberate exceptions propagated,"
        f" {failed.transactions.committed} blocks committed",
    )
    perf.run([[perf.read(keys[i % 5]) for i in range(200)]])
    perf.check_tally()
    perf.check_connections()
    perf.system.engine.dispose()  # the pool's own connections are not a leak
    fds_after = ResourceSnapshot.take().open_fds
    perf.metric("open_fds_growth", fds_after - fds_before)
    perf.check(
        "no descriptor leaked",
        fds_after <= fds_before,
        f"{fds_before} open descriptors before, {fds_after} after the pool was emptied",
    )
