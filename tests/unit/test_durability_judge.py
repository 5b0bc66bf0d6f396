"""The durability check's verdict on what is committed after a kill, and its drawn workloads."""

from __future__ import annotations

from typing import Any

from hypothesis import find, given, settings

from humanoid_training.target import HumanoidModel
from uowstress.stateful.durability import KillPlan, judge, kill_plans
from uowstress.target import DEFAULT_TARGET, load_target


def _state(*robots: str) -> dict[str, Any]:
    return {"robots": {r: {"name": r.upper()} for r in robots}, "events": []}


# The state after each of four commits: each adds one robot.
STATES = [_state(*"abcd"[:k]) for k in range(5)]


def test_the_acknowledged_state_passes() -> None:
    assert judge(STATES, 2, _state("a", "b"), []) == (2, None)


def test_the_commit_in_flight_may_have_landed() -> None:
    assert judge(STATES, 2, _state("a", "b", "c"), []) == (3, None)


def test_a_lost_acknowledged_commit_is_named() -> None:
    landed, finding = judge(STATES, 3, _state("a", "b"), [])
    assert landed == 2
    assert finding is not None and finding.kind == "lost"
    assert "commit 3 was acknowledged but is missing" in finding.message
    assert "state after commit 2 of 4" in finding.message


def test_several_lost_commits_are_named_as_a_range() -> None:
    landed, finding = judge(STATES, 4, _state("a"), [])
    assert landed == 1
    assert finding is not None and finding.kind == "lost"
    assert "commits 2 to 4 were acknowledged" in finding.message


def test_a_commit_that_changed_nothing_is_not_counted_as_lost() -> None:
    # Commit 2 changed nothing: finding the state after commit 1 loses only commit 3.
    states = [_state(), _state("a"), _state("a"), _state("a", "b")]
    landed, finding = judge(states, 3, _state("a"), [])
    assert landed == 2
    assert finding is not None and "commit 3 was acknowledged but is missing" in finding.message
    assert judge(states, 2, _state("a"), []) == (2, None)


def test_more_than_one_commit_past_the_acknowledged_is_reported() -> None:
    landed, finding = judge(STATES, 1, _state("a", "b", "c"), [])
    assert landed == 3
    assert finding is not None and "only 1 commit was acknowledged" in finding.message


def test_half_a_transaction_is_reported_with_its_differences() -> None:
    half = {"robots": {"a": {"name": "A"}, "b": {"name": "B"}}, "events": [["b", "x", "{}"]]}
    landed, finding = judge(STATES, 1, half, [])
    assert landed is None
    assert finding is not None and finding.kind == "partial"
    assert "robots[b] is committed but should not exist" in finding.message
    assert "events: unexpected" in finding.message


def test_a_broken_invariant_is_reported_even_in_an_expected_state() -> None:
    landed, finding = judge(STATES, 2, _state("a", "b"), ["robot a: scores regressed"])
    assert landed == 2
    assert finding is not None and finding.kind == "invariant"
    assert "robot a: scores regressed" in finding.message


@given(plan=kill_plans(load_target(DEFAULT_TARGET), HumanoidModel))
def test_drawn_plans_are_whole_transactions_with_a_kill_point_inside(plan: KillPlan) -> None:
    actions = [s["action"] for s in plan.steps]
    assert actions.count("begin") == actions.count("commit") == plan.commits >= 1
    # Each transaction: begin, at least one apply, commit; nothing left open at the end.
    transactions = " ".join(actions).split("commit")
    assert transactions[-1] == ""
    for transaction in transactions[:-1]:
        words = transaction.split()
        assert words[0] == "begin" and set(words[1:]) == {"apply"}, actions
    assert len(plan.outcomes) == len(plan.steps)
    assert plan.states[0] == HumanoidModel().state()
    assert 0 <= plan.kill_after_acks <= plan.commits
    # The extra steps stay within the transaction after the kill point (none after the last).
    following = (
        transactions[plan.kill_after_acks].split() if plan.kill_after_acks < plan.commits else []
    )
    assert 0 <= plan.extra_steps <= len(following) + (1 if following else 0)
    assert 0 <= plan.kill_delay_s <= 0.015


def test_the_simplest_plan_kills_inside_a_commit() -> None:
    # Hypothesis starts every run from its simplest example: that kill must test something.
    plan = find(
        kill_plans(load_target(DEFAULT_TARGET), HumanoidModel),
        lambda plan: True,
        settings=settings(database=None),
    )
    assert [s["action"] for s in plan.steps] == ["begin", "apply", "commit"]
    assert (plan.kill_after_acks, plan.extra_steps) == (0, 3)  # its commit started


@given(plan=kill_plans(load_target(DEFAULT_TARGET), HumanoidModel))
def test_the_expected_states_are_those_of_the_steps_replayed(plan: KillPlan) -> None:
    # The child runs `steps`; `states` must be what they commit, prefix by prefix.
    operations = {op.name: op for op in load_target(DEFAULT_TARGET).operations}
    model = HumanoidModel()
    seen = [model.state()]
    uow = model.unit_of_work()
    for step, expected in zip(plan.steps, plan.outcomes, strict=True):
        if step["action"] == "begin":
            uow = model.unit_of_work()
            uow.__enter__()
        elif step["action"] == "apply":
            try:
                operations[step["op"]].apply(uow, step["args"])
                raised = None
            except Exception as error:
                raised = type(error).__name__
            assert raised == expected, step
        else:
            uow.commit()
            uow.__exit__(None, None, None)
            seen.append(model.state())
    assert seen == plan.states
