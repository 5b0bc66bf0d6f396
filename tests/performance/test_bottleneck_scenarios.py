"""Where a Unit of Work runs out: memory held by a large unit of work, an exhausted connection
pool, serialization of growing payloads, and many concurrent writers.

Sizes come from performance_config.yaml (workloads); every scenario runs once per database.
"""

from __future__ import annotations

import gc
import json
import random
import threading
from typing import Any

from uowstress.config import BYTES_PER_MB
from uowstress.load import Job, LoadResult
from uowstress.metrics import MemorySampler, ResourceSnapshot
from uowstress.scenario import Scenario

# How long the holders of the pool exhaustion scenario wait for each other at most.
_GATE_TIMEOUT_S = 20.0


def test_memory_exhaustion(perf: Scenario) -> None:
    """A unit of work holding a large dataset at once: the memory it takes per aggregate, and
    whether all of it comes back when the unit of work ends."""
    count = perf.workloads.bulk_records
    keys = perf.create(count, batch=perf.workloads.bulk_batch_size)

    def read_all() -> LoadResult:
        # One huge transaction: its time is a figure of its own, not a typical transaction's.
        job = Job("read_all", lambda uow: [perf.workload.read(uow, k) for k in keys])
        return perf.run([[job]], counted=False)

    # Timed and measured untraced first: tracemalloc slows every allocation down and keeps
    # tables of its own, which would show in the time and in the memory retained.
    gc.collect()
    before = ResourceSnapshot.take().rss_bytes
    timed = read_all()
    perf.metric("load_all_s", timed.seconds)
    gc.collect()
    perf.metric("retained_mb", (ResourceSnapshot.take().rss_bytes - before) / BYTES_PER_MB)
    # Then once more under tracemalloc, for the Python heap it holds at its peak.
    with MemorySampler(trace_python=True) as traced:
        held_load = read_all()
    held = traced.python_peak or 0
    perf.metric("python_peak_mb", held / BYTES_PER_MB)
    perf.metric("kb_per_aggregate_held", held / 1024 / count)
    perf.check(
        "the whole dataset read in one transaction",
        timed.transactions.committed == 1 and held_load.transactions.committed == 1,
        f"{count} aggregates read in one unit of work: timed run committed"
        f" {timed.transactions.committed} of 1, traced run {held_load.transactions.committed}"
        f" of 1" + _errors(timed, held_load),
    )
    perf.check_tally()
    perf.check_connections()


def test_connection_pool_exhaustion(perf: Scenario) -> None:
    """More threads than the pool has connections, each holding its unit of work across
    several reads: waits for a connection, and every connection handed back. The first
    `capacity` threads each wait, holding their connection, until all of them hold one: the
    pool is really emptied, once."""
    pool = perf.system.engine.pool
    size = getattr(pool, "size", lambda: 5)()
    overflow = max(0, getattr(pool, "_max_overflow", 0))
    capacity = size + overflow
    threads = capacity + max(4, capacity // 2)
    keys = perf.create(threads)
    gate = threading.Event()
    holding: set[int] = set()
    lock = threading.Lock()

    def reading(chosen: list[str]) -> Job:
        return Job("read_several", lambda uow: [perf.workload.read(uow, k) for k in chosen])

    def holder(index: int, chosen: list[str]) -> Job:
        def work(uow: Any) -> list[Any]:
            read = [perf.workload.read(uow, k) for k in chosen]  # its connection is out now
            with lock:
                holding.add(index)  # a set: a retried attempt is the same holder
                if len(holding) == capacity:
                    gate.set()
            # A bound, not a measurement: a pool smaller than it says never opens the gate.
            gate.wait(timeout=_GATE_TIMEOUT_S)
            return read

        return Job("hold", work)

    rng = random.Random(29)
    loads = [[reading(rng.sample(keys, 4)) for _ in range(8)] for _ in range(threads)]
    for index in range(capacity):
        loads[index][0] = holder(index, rng.sample(keys, 4))
    perf.run(loads)
    peak = perf.pool_peak_checked_out()
    perf.metric("pool_capacity", capacity)
    perf.metric("threads", threads)
    perf.check_connections()
    perf.check(
        "the pool was emptied and kept its bound",
        gate.is_set() and peak == capacity,
        f"{len(holding)} of {capacity} holders held a connection at once; at most {peak}"
        f" connections out at once; pool capacity {capacity} ({size} + {overflow} overflow)"
        f" for {threads} threads",
    )
    perf.check(
        "every read committed",
        perf.transactions.committed == threads * 8,
        f"{perf.transactions.committed} of {threads * 8} committed" + _errors(perf),
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


def _errors(*sources: LoadResult | Scenario) -> str:
    """The errors by kind of some loads or of a scenario, for a check's detail."""
    kinds: dict[str, int] = {}
    for source in sources:
        errors = source.errors if isinstance(source, LoadResult) else source.result.errors
        for kind, n in errors.items():
            kinds[kind] = kinds.get(kind, 0) + n
    return "; errors: " + ", ".join(f"{k} x{n}" for k, n in kinds.items()) if kinds else ""
