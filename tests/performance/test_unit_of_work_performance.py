"""The Unit of Work with the whole domain model: high-volume concurrent operations, thread
scalability, large datasets, memory patterns of a growing aggregate, deadlocks, repository
queries (with their plans) and JSON payloads.

Sizes come from performance_config.yaml (workloads); every scenario runs once per database.
"""

from __future__ import annotations

import json
import random
import time

from uowstress.config import BYTES_PER_MB
from uowstress.load import Job
from uowstress.metrics import MemorySampler
from uowstress.scenario import Scenario


def test_high_volume_concurrent_operations(perf: Scenario) -> None:
    """Over a hundred operations at once: threads creating, changing and reading aggregates."""
    threads = perf.workloads.concurrent_threads
    per_thread = max(1, -(-100 // threads)) + 2  # at least 100 operations in all
    keys = perf.create(threads * 2)
    rng = random.Random(3)
    loads: list[list[Job]] = []
    for t in range(threads):
        jobs: list[Job] = []
        for i in range(per_thread):
            roll = i % 4
            if roll == 0:
                jobs.append(perf.create_job(perf.new_keys(1)))
            elif roll == 3:
                jobs.append(perf.read(rng.choice(keys)))
            else:
                jobs.append(perf.change(keys[(t * 2 + i) % len(keys)]))
        loads.append(jobs)
    perf.run(loads)
    perf.check(
        "a hundred operations or more committed",
        perf.transactions.committed >= 100,
        f"{perf.transactions.committed} of {perf.transactions.total} operations committed on"
        f" {threads} threads",
    )
    perf.check_tally()
    perf.check_invariants()
    perf.check_connections()


def test_thread_scalability(perf: Scenario) -> None:
    """The same amount of independent work on 1, 2, 4 and 8 threads: throughput and
    scaling efficiency (1.0 is linear; 1/threads is no gain at all)."""
    counts = perf.workloads.scalability_threads
    total = 8 * max(counts)  # divisible by every power of two up to the largest count
    keys = perf.create(max(counts))

    def jobs_for(threads: int) -> list[list[Job]]:
        return [
            [perf.change(keys[(t + i * threads) % len(keys)]) for i in range(total // threads)]
            for t in range(threads)
        ]

    points = perf.scalability(jobs_for, counts)
    perf.check(
        "every thread count measured",
        [p.threads for p in points] == sorted(counts) and all(p.ops_per_second > 0 for p in points),
        ", ".join(f"{p.threads}: {p.ops_per_second:.0f}/s ({p.efficiency:.2f})" for p in points),
    )
    perf.check_tally()


def test_large_dataset_operations(perf: Scenario) -> None:
    """A large dataset written in batches, then read back and partly changed."""
    records = perf.workloads.bulk_records
    batch = perf.workloads.bulk_batch_size
    keys = perf.new_keys(records)
    batches = [perf.create_job(keys[i : i + batch]) for i in range(0, records, batch)]
    started = time.perf_counter()
    perf.run([batches])
    perf.metric("bulk_records_per_second", records / (time.perf_counter() - started))
    rng = random.Random(5)
    sample = rng.sample(keys, min(len(keys), 200))
    perf.run([[perf.read(k) for k in sample[i::4]] for i in range(4)])
    perf.run([[perf.change(k) for k in sample[i::4]] for i in range(4)])
    counted = perf.workload.tally(perf.system)
    perf.check(
        "every record written",
        len(counted) == records,
        f"{len(counted)} aggregates in the database after writing {records}",
    )
    perf.check_tally()
    perf.check_connections()


def test_memory_patterns(perf: Scenario) -> None:
    """One aggregate taking change after change: how the time and the memory of loading it
    grow with its size."""
    (key,) = perf.create(1)
    total = perf.workloads.large_aggregate_changes
    per_transaction = 20
    marks = sorted({max(1, total // 4), max(1, total // 2), total})
    done = reads = reads_committed = 0
    for mark in marks:
        while done < mark:
            size = min(per_transaction, mark - done)
            perf.run([[perf.change_many([key] * size)]])
            done += size
        # Timed untraced (tracemalloc slows every allocation), then traced on its own.
        read = perf.run([[perf.read(key) for _ in range(5)]], counted=False)
        perf.metric(f"load_s_at_{done}_changes", sum(read.latencies) / len(read.latencies))
        with MemorySampler(trace_python=True) as traced:
            traced_read = perf.run([[perf.read(key)]], counted=False)
        perf.metric(f"load_python_mb_at_{done}_changes", (traced.python_peak or 0) / BYTES_PER_MB)
        reads_committed += read.transactions.committed + traced_read.transactions.committed
        reads += 6
    first, last = marks[0], marks[-1]
    if last > first:
        perf.metric(
            "load_time_growth",
            perf.result.metrics[f"load_s_at_{last}_changes"]
            / perf.result.metrics[f"load_s_at_{first}_changes"],
        )
    perf.check(
        "every measured load committed",
        reads_committed == reads,
        f"{reads_committed} of {reads} loads of the aggregate committed",
    )
    perf.check_tally()
    perf.check_connections()


def test_deadlock_scenarios(perf: Scenario) -> None:
    """Threads each changing two or three of a few shared aggregates in one transaction, in
    random order: lock-order deadlocks and conflicts, broken by the database and retried."""
    threads = perf.workloads.deadlock_threads
    operations = perf.workloads.deadlock_operations
    resources = perf.create(perf.workloads.deadlock_resources)
    rng = random.Random(13)
    perf.run(
        [
            [perf.change_many(rng.sample(resources, rng.choice((2, 3)))) for _ in range(operations)]
            for _ in range(threads)
        ]
    )
    perf.check_contention()
    perf.metric("deadlocks", perf.attempts.deadlocks)
    perf.check_tally()
    perf.check_invariants()
    perf.check_connections()


def test_repository_query_performance(perf: Scenario) -> None:
    """Every repository query of the target, timed on a populated database, and the plan of
    every statement it sends: a full table scan is reported."""
    keys = perf.create(100)
    rng = random.Random(17)
    perf.run([[perf.change(rng.choice(keys)) for _ in range(50)] for _ in range(2)])
    for name, seconds in perf.time_queries(repeats=10).items():
        perf.metric(f"query_{name}_mean_s", seconds)
    checks = perf.check_indexes()
    scans = [c for c in checks if c.full_scan]
    perf.metric("statements_explained", len(checks))
    perf.metric("full_scans", len(scans))
    names = [query.name for query in perf.target.queries]
    explained = {c.query for c in checks}
    missing = [name for name in names if name not in explained]
    perf.check(
        "every query explained",
        not missing,
        f"{len(checks)} statements of {len(names)} queries explained, {len(scans)} read a whole"
        " table" + (f"; no statement explained for {', '.join(missing)}" if missing else ""),
    )
    perf.check_tally()


def test_json_serialization(perf: Scenario) -> None:
    """JSON documents of growing size kept with aggregates and read back exactly: encoding,
    writing, reading and decoding throughput."""
    keys = perf.create(len(perf.workloads.payload_kb))
    for key, kilobytes in zip(keys, perf.workloads.payload_kb, strict=True):
        document = _document(kilobytes * 1024)
        size = len(json.dumps(document).encode())
        started = time.perf_counter()
        stored = perf.run([[perf.store(key, document)]])
        written = time.perf_counter() - started
        uow = perf.system.unit_of_work()
        started = time.perf_counter()
        with uow:
            back = perf.load_document(uow, key)
        read = time.perf_counter() - started
        perf.metric(f"write_mb_per_s_{kilobytes}kb", size / BYTES_PER_MB / written)
        perf.metric(f"read_mb_per_s_{kilobytes}kb", size / BYTES_PER_MB / read)
        if stored.transactions.committed:
            detail = f"{size} bytes written and read back" + (
                "" if back == document else ": it differs"
            )
        else:
            # Not a wrong read: the write never happened (the report holds its error).
            detail = f"{size} bytes: the write was refused ({', '.join(sorted(stored.errors))})"
            limit = perf.statement_limit()
            if limit is not None and size >= limit:
                # The server closes the connection ("server has gone away"), naming nothing.
                detail += (
                    f"; the server takes statements of at most {limit} bytes"
                    " (max_allowed_packet): raise it (SET GLOBAL max_allowed_packet = N, or in"
                    f" the server's configuration) or keep payload_kb below {limit // 1024}"
                )
        perf.check(f"{kilobytes} KB document read back exactly", back == document, detail)
    perf.check_connections()


def _document(size: int) -> dict[str, object]:
    """A JSON document of about ``size`` bytes, shaped like episode telemetry."""
    rng = random.Random(size)
    samples: list[dict[str, object]] = []
    document: dict[str, object] = {"kind": "telemetry", "samples": samples}
    length = len(json.dumps(document))
    while length < size:
        sample = {
            "t": len(samples),
            "joint": rng.randrange(23),
            "angle": round(rng.uniform(-3.14, 3.14), 6),
            "note": "ok" if rng.random() < 0.9 else "slip \u00e9\u4e2d",
        }
        samples.append(sample)
        length += len(json.dumps(sample)) + 2
    return document
