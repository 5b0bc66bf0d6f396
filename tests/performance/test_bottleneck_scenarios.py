"""Where a Unit of Work runs out: memory held by a large unit of work, an exhausted connection
pool, serialization of growing payloads, and many concurrent writers.

Sizes come from performance_config.yaml (workloads); every scenario runs once per database.
"""

from __future__ import annotations

import gc
import json
import random
import time
import tracemalloc

from uowstress.config import BYTES_PER_MB
from uowstress.load import Job
from uowstress.metrics import ResourceSnapshot
from uowstress.scenario import Scenario


def test_memory_exhaustion(perf: Scenario) -> None:
    """A unit of work holding a large dataset at once: the memory it takes per aggregate, and
    whether all of it comes back when the unit of work ends."""
    count = perf.workloads.bulk_records
    keys = perf.create(count, batch=perf.workloads.bulk_batch_size)
    gc.collect()
    before = ResourceSnapshot.take().rss_bytes
    tracemalloc.start()
    try:
        started = time.perf_counter()
        # One huge transaction: its time is a figure of its own, not a typical transaction's.
        perf.run(
            [[Job("read_all", lambda uow: [perf.workload.read(uow, k) for k in keys])]],
            counted=False,
        )
        held = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    perf.metric("load_all_s", time.perf_counter() - started)
    perf.metric("python_peak_mb", held / BYTES_PER_MB)
    perf.metric("kb_per_aggregate_held", held / 1024 / count)
    gc.collect()
    retained = (ResourceSnapshot.take().rss_bytes - before) / BYTES_PER_MB
    perf.metric("retained_mb", retained)
    perf.check_tally()
    perf.check_connections()


def test_connection_pool_exhaustion(perf: Scenario) -> None:
    """More threads than the pool has connections, each holding its unit of work across
    several reads: waits for a connection, and every connection handed back."""
    pool = perf.system.engine.pool
    size = getattr(pool, "size", lambda: 5)()
    overflow = max(0, getattr(pool, "_max_overflow", 0))
    capacity = size + overflow
    threads = capacity + max(4, capacity // 2)
    keys = perf.create(threads)

    def reading(chosen: list[str]) -> Job:
        return Job("read_several", lambda uow: [perf.workload.read(uow, k) for k in chosen])

    rng = random.Random(29)
    perf.run([[reading(rng.sample(keys, 4)) for _ in range(8)] for _ in range(threads)])
    perf.metric("pool_capacity", capacity)
    perf.metric("threads", threads)
    perf.check_connections()
    perf.check(
        "the pool kept its bound",
        perf.pool_peak_checked_out() <= capacity,
        f"at most {perf.pool_peak_checked_out()} connections out at once; pool capacity"
        f" {capacity} ({size} + {overflow} overflow) for {threads} threads",
    )


def test_serialization_bottleneck(perf: Scenario) -> None:
    """Documents of doubling size stored with one aggregate until the target refuses one or a
    limit is reached: throughput per size, and a refusal that loses nothing."""
    (key,) = perf.create(1)
    size_kb, largest_kb = 16, 4 * 1024
    kept: object = None
    while size_kb <= largest_kb:
        document = {"size_kb": size_kb, "blob": ["x" * 1000] * size_kb}
        size = len(json.dumps(document).encode())
        load = perf.run([[perf.store(key, document)]], attempts=1, counted=False)
        if load.transactions.committed != 1:
            perf.metric("refused_at_kb", size_kb)
            break
        perf.metric(f"store_mb_per_s_{size_kb}kb", size / BYTES_PER_MB / load.seconds)
        kept = document
        size_kb *= 2
    uow = perf.system.unit_of_work()
    with uow:
        back = perf.load_document(uow, key)
    perf.metric("largest_kept_kb", (size_kb // 2) if kept is not None else 0)
    perf.check(
        "a refused document lost nothing",
        back == kept,
        "the last accepted document is what the aggregate holds"
        if back == kept
        else "the aggregate does not hold the last accepted document",
    )
    perf.check_connections()


def test_concurrent_write_stress(perf: Scenario) -> None:
    """Many writers at once, each mostly on its own aggregate, now and then on a shared one."""
    writers = perf.workloads.writers
    writes = perf.workloads.writes_per_writer
    own = perf.create(writers)
    shared = perf.create(2)
    perf.run(
        [
            [perf.change(shared[i % 2] if i % 10 == 9 else own[w]) for i in range(writes)]
            for w in range(writers)
        ]
    )
    perf.check_tally()
    perf.check_invariants()
    perf.check_connections()
