"""Realistic training-lab load: many robots trained at once, high-frequency skill assessment,
curriculum progression under load, and a mixed workload.

In the Workload protocol's words (uowstress.workload), a key is a robot with its curriculum
and an open session, a change is one skill assessment and a cycle is one training episode
completed through the application service (session, robot and plan in one unit of work).
Sizes come from performance_config.yaml (workloads); every scenario runs once per database.
"""

from __future__ import annotations

import random

from uowstress.load import Job
from uowstress.scenario import Scenario


def test_multi_robot_concurrent_training(perf: Scenario) -> None:
    """Every robot trained by a thread of its own, episode after episode."""
    robots = perf.create(perf.workloads.training_robots)
    episodes = perf.workloads.curriculum_cycles
    perf.run([[perf.cycle(robot) for _ in range(episodes)] for robot in robots])
    perf.check(
        "every episode committed",
        perf.transactions.committed == len(robots) * episodes,
        f"{perf.transactions.committed} of {len(robots) * episodes} episodes committed",
    )
    perf.check_tally()
    perf.check_invariants()
    perf.check_connections()


def test_high_frequency_skill_assessment(perf: Scenario) -> None:
    """Assessments arriving fast: a thread per robot, and one in five for another robot."""
    robots = perf.create(perf.workloads.assessment_robots)
    per_robot = perf.workloads.assessments_per_robot
    rng = random.Random(19)
    perf.run(
        [
            [perf.change(rng.choice(robots) if i % 5 == 4 else robot) for i in range(per_robot)]
            for robot in robots
        ]
    )
    perf.check_tally()  # no lost assessment
    perf.check_invariants()
    perf.check_connections()


def test_curriculum_progression_under_load(perf: Scenario) -> None:
    """Plans progressing through their stages while four threads train their robots in an
    overlapping order, so that two episodes of one robot often meet."""
    threads = 4
    robots = perf.create(perf.workloads.curriculum_plans)
    cycles = perf.workloads.curriculum_cycles
    # Round c sends robot r to thread (r + c) mod threads: each robot moves from thread to
    # thread, so its episodes meet across threads whatever the number of robots (dealing a
    # flat list out would pin every robot to one thread when it divides by four).
    loads: list[list[Job]] = [[] for _ in range(threads)]
    trained_on: dict[str, set[int]] = {robot: set() for robot in robots}
    for c in range(cycles):
        for r, robot in enumerate(robots):
            loads[(r + c) % threads].append(perf.cycle(robot))
            trained_on[robot].add((r + c) % threads)
    perf.run(loads)
    episodes = len(robots) * cycles
    roaming = sum(len(on) > 1 for on in trained_on.values())
    perf.check(
        "robots trained on more than one thread",
        cycles < 2 or roaming == len(robots),
        f"{roaming} of {len(robots)} robots trained on several of {threads} threads",
    )
    transactions = perf.transactions
    perf.check(
        "every episode committed or refused cleanly",
        transactions.total == episodes and transactions.errors == 0,
        f"{transactions.committed} of {episodes} committed, {transactions.failed} not,"
        f" {transactions.errors} of them in an error"
        + (f" ({', '.join(sorted(perf.result.errors))})" if transactions.errors else ""),
    )
    perf.check_tally()
    perf.check_invariants()  # stage progress, counters and events agree
    perf.check_connections()


def test_mixed_workload(perf: Scenario) -> None:
    """Workers mixing reads, assessments, episodes, new robots and queries."""
    workers = perf.workloads.mixed_workers
    robots = perf.create(workers)
    rng = random.Random(23)
    loads: list[list[Job]] = []
    for _ in range(workers):
        jobs: list[Job] = []
        for i in range(20):
            roll = rng.random()
            if roll < 0.4:
                jobs.append(perf.read(rng.choice(robots)))
            elif roll < 0.7:
                jobs.append(perf.change(rng.choice(robots)))
            elif roll < 0.9:
                jobs.append(perf.cycle(rng.choice(robots)))
            else:
                jobs.append(perf.create_job(perf.new_keys(1)))
            if i % 10 == 9:
                jobs.append(perf.read(robots[i % len(robots)]))
        loads.append(jobs)
    perf.run(loads)
    for name, seconds in perf.time_queries(repeats=3).items():
        perf.metric(f"query_{name}_mean_s", seconds)
    perf.check_tally()
    perf.check_invariants()
    perf.check_connections()
