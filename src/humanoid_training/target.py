"""The reference Target: exposes the training lab to uowstress through its Target protocol.

Operations carry JSON arguments drawn by Hypothesis; identifiers come from the tester's
deterministic id source, so a written reproducer names the same robots when replayed. The model
is the same domain and services running on the in-memory Unit of Work.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select

from humanoid_training import services
from humanoid_training.domain import (
    CurriculumPlan,
    CurriculumStage,
    EpisodeMetrics,
    HumanoidRobot,
    LearningSession,
    RobotConfiguration,
    RobotType,
    SkillAssessment,
    SkillType,
)
from humanoid_training.footprint import ObservedUnitOfWork
from humanoid_training.memory import InMemoryUnitOfWork, MemoryStore
from humanoid_training.persistence import tables as t
from humanoid_training.persistence.codec import JsonCodec
from humanoid_training.persistence.engine import EngineOptions, make_engine
from humanoid_training.persistence.repositories import StoredEvent, from_micros
from humanoid_training.persistence.unit_of_work import (
    AbstractUnitOfWork,
    FaultHook,
    SqlAlchemyUnitOfWork,
)
from humanoid_training.weakenings import Weakenings
from humanoid_training.workload import WORKLOAD
from uowstress.target import Footprint, Ids, Operation, Query, State

SKILLS = [str(s) for s in SkillType]
MISSING = "missing"  # an id no example ever creates: exercises NotFound


# ---------------------------------------------------------------------------------------------
# Canonical state: the same JSON form for the database and the model
# ---------------------------------------------------------------------------------------------


def canonical_robot(robot: HumanoidRobot) -> dict[str, Any]:
    return {
        "name": robot.name,
        "robot_type": str(robot.robot_type),
        "configuration": robot.configuration.to_json(),
        "skills": {str(k): v for k, v in sorted(robot.skills.items())},
        "history": [
            [a.id, str(a.skill), a.score, a.confidence, a.evidence, a.assessed_at.isoformat()]
            for a in robot.history
        ],
    }


def canonical_session(session: LearningSession) -> dict[str, Any]:
    return {
        "robot_id": session.robot_id,
        "plan_id": session.plan_id,
        "status": str(session.status),
        "episodes_completed": session.episodes_completed,
        "episodes_successful": session.episodes_successful,
        "episodes": [
            [
                e.id,
                e.number,
                str(e.status),
                None if e.outcome is None else str(e.outcome),
                e.reward,
                None if e.metrics is None else e.metrics.to_json(),
            ]
            for e in session.episodes
        ],
    }


def canonical_plan(plan: CurriculumPlan) -> dict[str, Any]:
    return {
        "robot_id": plan.robot_id,
        "name": plan.name,
        "status": str(plan.status),
        "current_stage_index": plan.current_stage_index,
        "stages": [
            [
                s.name,
                [str(k) for k in s.target_skills],
                [str(k) for k in s.prerequisite_skills],
                s.min_episodes,
                s.target_success_rate,
                s.episodes,
                s.successes,
            ]
            for s in plan.stages
        ],
    }


def canonical_events(events: Sequence[StoredEvent]) -> list[list[str]]:
    # Event ids and times are made afresh by each side; what must agree is which events exist.
    return sorted(
        [e.aggregate_id, e.event_type, json.dumps(e.payload, sort_keys=True)] for e in events
    )


def canonical_state(
    robots: Mapping[str, HumanoidRobot],
    sessions: Mapping[str, LearningSession],
    plans: Mapping[str, CurriculumPlan],
    events: Sequence[StoredEvent],
) -> State:
    return {
        "robots": {rid: canonical_robot(r) for rid, r in sorted(robots.items())},
        "sessions": {sid: canonical_session(s) for sid, s in sorted(sessions.items())},
        "plans": {pid: canonical_plan(p) for pid, p in sorted(plans.items())},
        "events": canonical_events(events),
    }


def invariants(state: State) -> list[str]:
    """Every rule of committed state that does not hold, in plain words."""
    problems: list[str] = []
    robots, sessions, plans = state["robots"], state["sessions"], state["plans"]
    events = [(agg, kind, json.loads(payload)) for agg, kind, payload in state["events"]]
    for rid, robot in robots.items():
        best: dict[str, float] = {}
        for _id, skill, score, *_ in robot["history"]:
            best[skill] = max(best.get(skill, score), score)
        if robot["skills"] != dict(sorted(best.items())):
            problems.append(
                f"robot {rid}: skill scores {robot['skills']} are not the best scores of its"
                f" assessment history {best} (an update was lost or a score regressed)"
            )
    open_by_robot = Counter(
        s["robot_id"] for s in sessions.values() if s["status"] in ("active", "paused")
    )
    for rid, count in open_by_robot.items():
        if count > 1:
            problems.append(f"robot {rid} has {count} open sessions; at most one is allowed")
    for sid, s in sessions.items():
        if s["robot_id"] not in robots:
            problems.append(f"session {sid} belongs to robot {s['robot_id']}, which does not exist")
        statuses = [e[2] for e in s["episodes"]]
        completed = statuses.count("completed")
        successful = sum(
            1
            for e in s["episodes"]
            if e[2] == "completed" and e[3] in ("success", "partial_success")
        )
        if (s["episodes_completed"], s["episodes_successful"]) != (completed, successful):
            problems.append(
                f"session {sid}: counters say {s['episodes_completed']} completed /"
                f" {s['episodes_successful']} successful, episodes say {completed} / {successful}"
            )
        in_progress = [x for x in statuses if x in ("pending", "running")]
        if len(in_progress) > 1 or (in_progress and s["status"] not in ("active", "paused")):
            problems.append(f"session {sid} ({s['status']}) has episodes in progress: {statuses}")
        if "running" in statuses and s["status"] != "active":
            problems.append(f"session {sid} is {s['status']} but an episode is running")
    for pid, p in plans.items():
        if p["robot_id"] not in robots:
            problems.append(f"plan {pid} belongs to robot {p['robot_id']}, which does not exist")
        if p["stages"] and not 0 <= p["current_stage_index"] < len(p["stages"]):
            problems.append(f"plan {pid}: stage index {p['current_stage_index']} out of range")
        for stage in p["stages"]:
            if not 0 <= stage[6] <= stage[5]:
                problems.append(f"plan {pid} stage {stage[0]!r}: successes exceed episodes")
    assessed = Counter(
        payload["assessment_id"] for _, kind, payload in events if kind == "SkillAssessed"
    )
    history_ids = {a[0]: rid for rid, r in robots.items() for a in r["history"]}
    for aid in history_ids:
        if assessed[aid] != 1:
            problems.append(
                f"assessment {aid} of robot {history_ids[aid]} has {assessed[aid]} SkillAssessed"
                " events; exactly one must be committed with it"
            )
    for aid in assessed:
        if aid not in history_ids:
            problems.append(
                f"a SkillAssessed event names assessment {aid}, which is not committed"
                " (an event outlived its rolled-back change)"
            )
    completed_events = Counter(agg for agg, kind, _ in events if kind == "EpisodeCompleted")
    started_events = Counter(agg for agg, kind, _ in events if kind == "SessionStarted")
    for sid, s in sessions.items():
        if completed_events[sid] != s["episodes_completed"]:
            problems.append(
                f"session {sid}: {completed_events[sid]} EpisodeCompleted events for"
                f" {s['episodes_completed']} completed episodes"
            )
        expected = 0 if s["status"] == "created" else 1
        if started_events[sid] != expected:
            problems.append(f"session {sid}: {started_events[sid]} SessionStarted events")
    for agg in set(completed_events) | set(started_events):
        if agg not in sessions:
            problems.append(f"events name session {agg}, which is not committed")
    return problems


# ---------------------------------------------------------------------------------------------
# Argument strategies
# ---------------------------------------------------------------------------------------------

# Each builder below is a composite over strategies built once: a strategy built afresh for
# every step is validated and labelled afresh too, which cost more than the drawing itself.

unit = st.floats(0.0, 1.0, allow_nan=False)
names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12
)
_BOOLEANS = st.booleans()
_ANY_SKILL = st.sampled_from(SKILLS)
_ROBOT_TYPES = st.sampled_from([str(r) for r in RobotType])
_JOINT_COUNTS = st.integers(1, 60)
_HEIGHTS = st.floats(0.3, 3.0)
_MICROS = st.integers(0, 4_102_444_800_000_000)  # microseconds, until 2100
_OUTCOMES = st.sampled_from(["success", "partial_success", "failure"])
_REWARDS = st.floats(-1e6, 1e6, allow_nan=False)
_RATIOS = st.floats(0.1, 1.0)
_CHANGES = st.sampled_from([str(c) for c in services.SessionChange])
_STAGES = st.lists(
    st.fixed_dictionaries(
        {
            "name": names,
            "targets": st.lists(_ANY_SKILL, min_size=1, max_size=2, unique=True),
            "prerequisites": st.lists(_ANY_SKILL, max_size=1),
            "min_episodes": st.integers(0, 3),
            "rate": unit,
        }
    ),
    max_size=3,
)


def _one_of(
    draw: st.DrawFn, choices: Sequence[str], parts: int, kept: int, held: Sequence[str] = ()
) -> str | None:
    """One of `choices` in `kept` cases out of `parts`, None otherwise, from a single draw.

    `held`: those of the choices another session's open unit of work holds (`Ids.contended`);
    when there are any, one of them half the time instead, so that concurrent units of work
    meet on one aggregate. Hypothesis records every choice of every example it runs (to avoid
    repeating one), so one integer instead of a selector and an index keeps that record
    smaller."""
    span = parts * len(choices)
    if held:
        # The lower half of the draw picks among the held ids, its upper half as without.
        i = draw(st.integers(0, 2 * span - 1))
        if i < span:
            return held[i % len(held)]
        i -= span
    else:
        i = draw(st.integers(0, span - 1))
    return choices[i % len(choices)] if i < kept * len(choices) else None


def _held(contended: Sequence[str], choices: Sequence[str]) -> list[str]:
    """The contended values that are among `choices`, in their order."""
    if not contended:
        return []
    among = set(choices)
    return [c for c in contended if c in among]


def _existing(draw: st.DrawFn, ids: Sequence[str], contended: Sequence[str] = ()) -> str:
    """An existing id nine times in ten (one another session holds half the time there is one);
    now and then one that does not exist (NotFound)."""
    if not ids:
        return MISSING
    choices = sorted(ids)
    chosen = _one_of(draw, choices, 10, 9, _held(contended, choices))
    return MISSING if chosen is None else chosen


def _assessable(state: State, robot_id: str) -> list[str]:
    """Skills whose prerequisites the robot has at beginner level or above; the skills it
    already has come twice, so that concurrent units of work often touch the same score."""
    skills = state["robots"].get(robot_id, {}).get("skills", {})
    ready = [
        str(skill)
        for skill in SkillType
        if all(skills.get(str(p), 0.0) >= 0.125 for p in skill.prerequisites)
    ]
    return ready + [s for s in ready if s in skills]


def _prefer(
    draw: st.DrawFn, preferred: Sequence[str], every: Sequence[str], contended: Sequence[str]
) -> str:
    """Mostly an id where the operation can succeed (one another session's open unit of work
    holds, half the time there is one); otherwise any id (or a missing one)."""
    choices = sorted(preferred)
    chosen = _one_of(draw, choices, 4, 3, _held(contended, choices)) if choices else None
    return chosen if chosen is not None else _existing(draw, every, contended)


def _open_robots(state: State) -> set[str]:
    return {
        s["robot_id"] for s in state["sessions"].values() if s["status"] in ("active", "paused")
    }


def _free_robots(state: State) -> list[str]:
    busy = _open_robots(state)
    return [r for r in state["robots"] if r not in busy]


def _sessions_where(state: State, status: str, last_episode: str | bool | None) -> list[str]:
    """Sessions in `status` whose latest episode is in `last_episode` (None: no episode in
    progress; False: any)."""
    out = []
    for sid, sess in state["sessions"].items():
        if sess["status"] != status:
            continue
        episodes = sess["episodes"]
        latest = episodes[-1][2] if episodes else None
        in_progress = latest in ("pending", "running")
        if (
            last_episode is False
            or (last_episode is None and not in_progress)
            or (last_episode == latest)
        ):
            out.append(sid)
    return out


def _draft_plans(state: State) -> list[str]:
    return [pid for pid, p in state["plans"].items() if p["status"] == "draft" and p["stages"]]


def _assessment(draw: st.DrawFn, ids: Ids, skills: list[str]) -> dict[str, Any]:
    # Mostly skills the robot may be assessed on, so that runs reach deep skill trees; any
    # skill now and then, to exercise the prerequisite rule.
    assessment_id = ids.fresh("a")
    skill = _one_of(draw, skills, 5, 4) if skills else None
    if skill is None:
        skill = draw(_ANY_SKILL)
    return {
        "id": assessment_id,
        "skill": skill,
        "score": draw(unit),
        "confidence": draw(unit),
        "evidence": draw(unit),
        "at": draw(_MICROS),
    }


def _robot_ids(state: State) -> list[str]:
    return list(state["robots"])


def _session_ids(state: State) -> list[str]:
    return list(state["sessions"])


def _plan_ids(state: State) -> list[str]:
    return list(state["plans"])


@st.composite
def robot_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    return {
        "robot_id": ids.fresh("r"),
        "name": draw(names),
        "robot_type": draw(_ROBOT_TYPES),
        "joint_count": draw(_JOINT_COUNTS),
        "height_m": draw(_HEIGHTS),
    }


@st.composite
def assess_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    robot_id = _existing(draw, _robot_ids(state), ids.contended)
    skills = _assessable(state, robot_id)
    count = draw(st.integers(1, 3))
    return {
        "robot_id": robot_id,
        "assessments": [_assessment(draw, ids, skills) for _ in range(count)],
    }


@st.composite
def rename_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    return {"robot_id": _existing(draw, _robot_ids(state), ids.contended), "name": draw(names)}


@st.composite
def plan_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    return {
        "plan_id": ids.fresh("p"),
        "robot_id": _existing(draw, _robot_ids(state), ids.contended),
        "name": draw(names),
        "stages": draw(_STAGES),
        "activate": draw(_BOOLEANS),
    }


@st.composite
def plan_id_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    return {"plan_id": _prefer(draw, _draft_plans(state), _plan_ids(state), ids.contended)}


@st.composite
def open_session_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    plans = _plan_ids(state)
    session_id = ids.fresh("s")
    robot_id = _prefer(draw, _free_robots(state), _robot_ids(state), ids.contended)
    plan_id = _one_of(draw, sorted(plans), 2, 1) if plans else None
    return {"session_id": session_id, "robot_id": robot_id, "plan_id": plan_id}


@st.composite
def sessions_change_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    session_ids: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        session_id = _existing(draw, _session_ids(state), ids.contended)
        if session_id not in session_ids:
            session_ids.append(session_id)
    return {"session_ids": session_ids, "change": draw(_CHANGES)}


@st.composite
def pending_episode_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    pending = _sessions_where(state, "active", "pending")
    return {"session_id": _prefer(draw, pending, _session_ids(state), ids.contended)}


@st.composite
def running_episode_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    running = _sessions_where(state, "active", "running")
    return {"session_id": _prefer(draw, running, _session_ids(state), ids.contended)}


@st.composite
def new_episode_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    session_id = _prefer(
        draw, _sessions_where(state, "active", None), _session_ids(state), ids.contended
    )
    return {"session_id": session_id, "episode_id": ids.fresh("e"), "start": draw(_BOOLEANS)}


@st.composite
def finish_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    running = _sessions_where(state, "active", "running")
    session_id = _prefer(draw, running, _session_ids(state), ids.contended)
    robot_id = state["sessions"].get(session_id, {}).get("robot_id", MISSING)
    skills = _assessable(state, robot_id)
    return {
        "session_id": session_id,
        "outcome": draw(_OUTCOMES),
        "reward": draw(_REWARDS),
        "success_rate": draw(unit),
        "assessments": [_assessment(draw, ids, skills) for _ in range(draw(st.integers(0, 2)))],
    }


@st.composite
def teach_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    robots = _robot_ids(state)
    return {
        "source": _existing(draw, robots, ids.contended),
        "target": _existing(draw, robots, ids.contended),
        "ratio": draw(_RATIOS),
        "ids": [ids.fresh("a") for _ in SKILLS],
        "at": draw(_MICROS),
    }


# ---------------------------------------------------------------------------------------------
# Operations: each applies JSON arguments through a Unit of Work
# ---------------------------------------------------------------------------------------------


def _assessments(raw: Sequence[Mapping[str, Any]]) -> list[SkillAssessment]:
    return [
        SkillAssessment(
            id=a["id"],
            skill=SkillType(a["skill"]),
            score=a["score"],
            confidence=a["confidence"],
            evidence=a["evidence"],
            assessed_at=from_micros(a["at"]),
        )
        for a in raw
    ]


def do_register(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
    config = RobotConfiguration(
        joint_count=a["joint_count"],
        height_m=a["height_m"],
        weight_kg=30.0,
        max_joint_velocity=8.0,
    )
    uow.robots.add(HumanoidRobot.create(a["name"], a["robot_type"], config, id=a["robot_id"]))
    return a["robot_id"]


def do_assess(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
    uow.robots.get(a["robot_id"]).assess_many(_assessments(a["assessments"]))
    return None


def do_rename(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
    uow.robots.get(a["robot_id"]).rename(a["name"])
    return None


def do_create_plan(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
    uow.robots.get(a["robot_id"])
    plan = CurriculumPlan(id=a["plan_id"], robot_id=a["robot_id"], name=a["name"])
    for s in a["stages"]:
        plan.add_stage(
            CurriculumStage(
                name=s["name"],
                target_skills=tuple(SkillType(x) for x in s["targets"]),
                prerequisite_skills=tuple(SkillType(x) for x in s["prerequisites"]),
                min_episodes=s["min_episodes"],
                target_success_rate=s["rate"],
            )
        )
    if a["activate"]:
        plan.activate()
    uow.plans.add(plan)
    return plan.id


def do_activate(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
    uow.plans.get(a["plan_id"]).activate()
    return None


def do_open_session(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
    return services.open_session(uow, a["robot_id"], a["plan_id"], session_id=a["session_id"]).id


def do_change_sessions(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
    services.apply_to_sessions(uow, a["session_ids"], a["change"])
    return None


def do_new_episode(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
    session = uow.sessions.get(a["session_id"])
    episode = session.new_episode(a["episode_id"])
    if a["start"]:
        session.start_episode()
    return episode.id


def do_start_episode(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
    return uow.sessions.get(a["session_id"]).start_episode().id


def do_fail_episode(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
    return uow.sessions.get(a["session_id"]).fail_episode().id


def _metrics(a: dict[str, Any]) -> EpisodeMetrics:
    return EpisodeMetrics(success_rate=a["success_rate"], reward=a["reward"])


def do_finish(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
    return services.finish_episode(
        uow,
        a["session_id"],
        a["outcome"],
        a["reward"],
        _metrics(a),
        _assessments(a["assessments"]),
    )


def do_teach(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
    taught = services.teach(
        uow, a["source"], a["target"], a["ratio"], ids=a["ids"], assessed_at=from_micros(a["at"])
    )
    return [x.id for x in taught]


# ---------------------------------------------------------------------------------------------
# The JSON types of the arguments, checked before an operation reads them
# ---------------------------------------------------------------------------------------------

# What each operation takes, as its strategy draws it: an object is a dict of its arguments'
# kinds, an array a list of one kind, a scalar a Python type (`float` takes any number, `int`
# a whole one; neither takes a bool) or a tuple of those (None for null). A reproducer edited
# by hand may hold something else: the operation then fails as a Python function fails on
# arguments that do not fit it, a KeyError for one that is missing and a TypeError for one it
# does not take or of another type, on the model as on the system. uowstress tells such a
# step from a refusal of the domain's rules by these errors (the domain refuses a value of
# another type as it refuses any other value, with InvalidValue: a step that fits no operation
# would otherwise replay as passing, the model and the system refusing it alike).
_ASSESSMENT_ARGS = {
    "id": str,
    "skill": str,
    "score": float,
    "confidence": float,
    "evidence": float,
    "at": int,
}
_SESSION_ARGS = {"session_id": str}
_FINISH_ARGS = {
    "session_id": str,
    "outcome": str,
    "reward": float,
    "success_rate": float,
    "assessments": [_ASSESSMENT_ARGS],
}
_TEACH_ARGS = {"source": str, "target": str, "ratio": float, "ids": [str], "at": int}
_OPEN_SESSION_ARGS = {"session_id": str, "robot_id": str, "plan_id": (str, None)}
_CHANGE_ARGS = {"session_ids": [str], "change": str}
_ROBOT_QUERY_ARGS = {"robot_id": str, "open_only": bool}


def _json_kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return names.get(type(value), type(value).__name__)


def _fits(value: Any, kind: Any) -> bool:
    if isinstance(kind, tuple):
        return any(_fits(value, one) for one in kind)
    if kind is None:
        return value is None
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def check_arguments(value: Any, kind: Any, path: str = "") -> None:
    """Refuse `value` unless it has the JSON shape `kind` describes (see above): KeyError
    for a missing argument, TypeError for an argument not taken or a value of another type.
    `path` names `value` among the arguments ("" for all of them)."""
    what = f"argument {path}" if path else "the arguments"
    if isinstance(kind, dict):
        if not isinstance(value, dict):
            raise TypeError(f"{what} must be an object, got {_json_kind(value)}")
        for name, inner in kind.items():
            if name not in value:
                raise KeyError(f"{path}.{name}" if path else name)
            check_arguments(value[name], inner, f"{path}.{name}" if path else name)
        unknown = sorted(set(value) - set(kind))
        if unknown:
            extra = f"{path}.{unknown[0]}" if path else unknown[0]
            raise TypeError(f"unexpected argument {extra!r}")
    elif isinstance(kind, list):
        if not isinstance(value, list):
            raise TypeError(f"{what} must be an array, got {_json_kind(value)}")
        for index, item in enumerate(value):
            check_arguments(item, kind[0], f"{path}[{index}]")
    elif not _fits(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        wanted = " or ".join(
            {None: "null", bool: "a boolean", int: "a whole number", float: "a number"}.get(
                k, "a string"
            )
            for k in kinds
        )
        raise TypeError(f"{what} must be {wanted}, got {_json_kind(value)} {value!r:.80}")


def _typed(
    takes: dict[str, Any], run: Callable[[AbstractUnitOfWork, dict[str, Any]], Any]
) -> Callable[[AbstractUnitOfWork, dict[str, Any]], Any]:
    """`run`, its arguments checked first (see `check_arguments`)."""

    def typed(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
        check_arguments(a, takes)
        return run(uow, a)

    return typed


def _as_transaction(step: Callable[[AbstractUnitOfWork, dict[str, Any]], Any]) -> Any:
    def run(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
        with uow:
            result = step(uow, a)
            uow.commit()
        return result

    return run


def _has_robots(state: State) -> bool:
    return bool(state["robots"])


def _can_open(state: State) -> bool:
    return bool(_free_robots(state))


def _has_open_sessions(state: State) -> bool:
    return any(s["status"] in ("created", "active", "paused") for s in state["sessions"].values())


def _can_add_episode(state: State) -> bool:
    return bool(_sessions_where(state, "active", None))


def _has_pending(state: State) -> bool:
    return bool(_sessions_where(state, "active", "pending"))


def _has_running(state: State) -> bool:
    return bool(_sessions_where(state, "active", "running"))


def _two_robots(state: State) -> bool:
    return len(state["robots"]) >= 2


def _op(
    name: str,
    arguments: Any,
    step: Callable[[AbstractUnitOfWork, dict[str, Any]], Any],
    enabled: Callable[[State], bool] | None,
    *,
    takes: dict[str, Any],
    service: bool = False,
) -> Operation:
    typed = _typed(takes, step)
    if service:
        return Operation(name, arguments, _as_transaction(typed), "transaction", enabled)
    return Operation(name, arguments, typed, "step", enabled)


OPERATIONS: tuple[Operation, ...] = (
    # A few robots only, so that sessions contend for the same ones; more are still drawn now
    # and then (an operation that is not enabled is drawn one time in ten).
    _op(
        "register_robot",
        robot_args,
        do_register,
        lambda s: len(s["robots"]) < 3,
        takes={
            "robot_id": str,
            "name": str,
            "robot_type": str,
            "joint_count": int,
            "height_m": float,
        },
    ),
    _op(
        "assess",
        assess_args,
        do_assess,
        _has_robots,
        takes={"robot_id": str, "assessments": [_ASSESSMENT_ARGS]},
    ),
    _op("rename_robot", rename_args, do_rename, _has_robots, takes={"robot_id": str, "name": str}),
    _op(
        "create_plan",
        plan_args,
        do_create_plan,
        lambda s: _has_robots(s) and len(s["plans"]) < 3,
        takes={
            "plan_id": str,
            "robot_id": str,
            "name": str,
            "stages": [
                {
                    "name": str,
                    "targets": [str],
                    "prerequisites": [str],
                    "min_episodes": int,
                    "rate": float,
                }
            ],
            "activate": bool,
        },
    ),
    _op(
        "activate_plan",
        plan_id_args,
        do_activate,
        lambda s: bool(_draft_plans(s)),
        takes={"plan_id": str},
    ),
    _op("open_session", open_session_args, do_open_session, _can_open, takes=_OPEN_SESSION_ARGS),
    _op(
        "change_sessions",
        sessions_change_args,
        do_change_sessions,
        _has_open_sessions,
        takes=_CHANGE_ARGS,
    ),
    _op(
        "new_episode",
        new_episode_args,
        do_new_episode,
        _can_add_episode,
        takes={"session_id": str, "episode_id": str, "start": bool},
    ),
    _op(
        "start_episode",
        pending_episode_args,
        do_start_episode,
        _has_pending,
        takes=_SESSION_ARGS,
    ),
    _op("fail_episode", running_episode_args, do_fail_episode, _has_running, takes=_SESSION_ARGS),
    _op("finish_episode", finish_args, do_finish, _has_running, takes=_FINISH_ARGS),
    _op("teach", teach_args, do_teach, _two_robots, takes=_TEACH_ARGS),
    # The application services, each its own unit of work.
    _op(
        "start_session",
        open_session_args,
        do_open_session,
        _can_open,
        takes=_OPEN_SESSION_ARGS,
        service=True,
    ),
    _op(
        "complete_episode",
        finish_args,
        do_finish,
        _has_running,
        takes=_FINISH_ARGS,
        service=True,
    ),
    _op("transfer_skills", teach_args, do_teach, _two_robots, takes=_TEACH_ARGS, service=True),
    _op(
        "batch_update",
        sessions_change_args,
        do_change_sessions,
        _has_open_sessions,
        takes=_CHANGE_ARGS,
        service=True,
    ),
)


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------


_NO_ARGUMENTS: st.SearchStrategy[dict[str, Any]] = st.just({})
_SKILL_QUERY = st.fixed_dictionaries({"skill": _ANY_SKILL, "min_score": unit})


def _none(state: State, ids: Ids) -> st.SearchStrategy[dict[str, Any]]:
    return _NO_ARGUMENTS


@st.composite
def _robot_query_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    return {
        "robot_id": _existing(draw, _robot_ids(state), ids.contended),
        "open_only": draw(_BOOLEANS),
    }


def _skill_query_args(state: State, ids: Ids) -> st.SearchStrategy[dict[str, Any]]:
    return _SKILL_QUERY


@st.composite
def _aggregate_args(draw: st.DrawFn, state: State, ids: Ids) -> dict[str, Any]:
    every = _robot_ids(state) + _session_ids(state) + _plan_ids(state)
    return {"aggregate_id": _existing(draw, every, ids.contended)}


def _in_uow(
    takes: dict[str, Any], read: Callable[[AbstractUnitOfWork, dict[str, Any]], Any]
) -> Any:
    typed = _typed(takes, read)

    def run(uow: AbstractUnitOfWork, a: dict[str, Any]) -> Any:
        with uow:
            return typed(uow, a)

    return run


QUERIES: tuple[Query, ...] = (
    Query(
        "get_robot",
        _robot_query_args,
        _in_uow(
            _ROBOT_QUERY_ARGS,
            lambda u, a: canonical_robot(u.robots.get(a["robot_id"])),
        ),
    ),
    Query(
        "find_active_sessions",
        _none,
        _in_uow(
            {},
            lambda u, a: [s.id for s in u.sessions.find_active_sessions()],
        ),
    ),
    Query(
        "find_sessions_by_robot",
        _robot_query_args,
        _in_uow(
            _ROBOT_QUERY_ARGS,
            lambda u, a: sorted(
                s.id
                for s in u.sessions.find_sessions_by_robot(a["robot_id"], open_only=a["open_only"])
            ),
        ),
    ),
    Query(
        "find_robots_by_skill",
        _skill_query_args,
        _in_uow(
            {"skill": str, "min_score": float},
            lambda u, a: sorted(
                r.id for r in u.robots.find_robots_by_skill(SkillType(a["skill"]), a["min_score"])
            ),
        ),
    ),
    Query(
        "find_active_plans",
        _none,
        _in_uow({}, lambda u, a: [p.id for p in u.plans.find_active_plans()]),
    ),
    Query(
        "events_for",
        _aggregate_args,
        _in_uow(
            {"aggregate_id": str},
            lambda u, a: [
                [e.event_type, e.payload] for e in u.events.events_for(a["aggregate_id"])
            ],
        ),
    ),
)


# ---------------------------------------------------------------------------------------------
# The system on a database, its model, and the target
# ---------------------------------------------------------------------------------------------


class HumanoidModel:
    def __init__(self) -> None:
        self.store = MemoryStore()

    def unit_of_work(self) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self.store)

    def state(self) -> State:
        s = self.store
        return canonical_state(s.robots, s.sessions, s.plans, s.events)


# The committed-state reader's queries and the reset, built once (building a statement costs
# more than running it on SQLite).
_READ_ROBOTS = select(t.robots)
_READ_SKILLS = select(t.robot_skills).order_by(t.robot_skills.c.skill)
_READ_ASSESSMENTS = select(t.assessments).order_by(
    t.assessments.c.robot_id, t.assessments.c.seq, t.assessments.c.id
)
_READ_SESSIONS = select(t.sessions)
_READ_EPISODES = select(t.episodes).order_by(t.episodes.c.session_id, t.episodes.c.number)
_READ_PLANS = select(t.plans)
_READ_STAGES = select(t.stages).order_by(t.stages.c.plan_id, t.stages.c.position)
_READ_EVENTS = select(t.outbox.c.aggregate_id, t.outbox.c.event_type, t.outbox.c.payload)
_DELETE_ALL = tuple(delete(table) for table in reversed(t.metadata.sorted_tables))


class HumanoidSystem:
    def __init__(self, engine: Engine, weakenings: Weakenings, codec: JsonCodec) -> None:
        self.engine = engine
        self.weakenings = weakenings
        self.codec = codec

    def unit_of_work(self, fault_hook: FaultHook | None = None) -> ObservedUnitOfWork:
        return ObservedUnitOfWork(
            self.engine, weakenings=self.weakenings, codec=self.codec, fault_hook=fault_hook
        )

    def footprints(self, uow: ObservedUnitOfWork) -> Sequence[Footprint]:
        """What each transaction of the unit of work read and wrote, aggregate by aggregate
        (see humanoid_training.footprint): uowstress checks the history it makes for
        isolation anomalies."""
        return uow.footprints()

    def versions(self, uow: SqlAlchemyUnitOfWork) -> dict[str, int]:
        """The version of every aggregate the unit of work holds (read by uowstress before and
        after a commit, to see which versions each unit of work read and installed)."""
        return {
            f"{kind}:{aggregate_id}": t.aggregate.version
            for (kind, aggregate_id), t in uow.tracked.items()
        }

    def new_model(self) -> HumanoidModel:
        return HumanoidModel()

    def committed_state(self) -> State:
        """Read straight from the tables, one query per table and in one transaction: apart
        from the repositories' own load path, and cheap enough to run after every step."""
        decode = self.codec.decode
        with self.engine.connect() as conn:
            robots: dict[str, Any] = {
                r.id: {
                    "name": r.name,
                    "robot_type": r.robot_type,
                    "configuration": RobotConfiguration.from_json(
                        decode(r.configuration)
                    ).to_json(),
                    "skills": {},
                    "history": [],
                }
                for r in conn.execute(_READ_ROBOTS).all()
            }
            for r in conn.execute(_READ_SKILLS).all():
                robots.setdefault(r.robot_id, {"skills": {}})["skills"][r.skill] = r.score
            for r in conn.execute(_READ_ASSESSMENTS).all():
                robots.setdefault(r.robot_id, {"history": []})["history"].append(
                    [
                        r.id,
                        r.skill,
                        r.score,
                        r.confidence,
                        r.evidence,
                        from_micros(r.assessed_at).isoformat(),
                    ]
                )
            sessions: dict[str, Any] = {
                r.id: {
                    "robot_id": r.robot_id,
                    "plan_id": r.plan_id,
                    "status": r.status,
                    "episodes_completed": r.episodes_completed,
                    "episodes_successful": r.episodes_successful,
                    "episodes": [],
                }
                for r in conn.execute(_READ_SESSIONS).all()
            }
            for r in conn.execute(_READ_EPISODES).all():
                metrics = (
                    None
                    if r.metrics is None
                    else EpisodeMetrics.from_json(decode(r.metrics)).to_json()
                )
                sessions.setdefault(r.session_id, {"episodes": []})["episodes"].append(
                    [r.id, r.number, r.status, r.outcome, r.reward, metrics]
                )
            plans: dict[str, Any] = {
                r.id: {
                    "robot_id": r.robot_id,
                    "name": r.name,
                    "status": r.status,
                    "current_stage_index": r.current_stage_index,
                    "stages": [],
                }
                for r in conn.execute(_READ_PLANS).all()
            }
            for r in conn.execute(_READ_STAGES).all():
                plans.setdefault(r.plan_id, {"stages": []})["stages"].append(
                    [
                        r.name,
                        [x for x in r.target_skills.split(",") if x],
                        [x for x in r.prerequisite_skills.split(",") if x],
                        r.min_episodes,
                        r.target_success_rate,
                        r.episodes,
                        r.successes,
                    ]
                )
            # Plain json for the outbox payloads: the codec's limits protect the system from
            # what it is given, not this reader from what the system wrote.
            events = sorted(
                [r.aggregate_id, r.event_type, json.dumps(json.loads(r.payload), sort_keys=True)]
                for r in conn.execute(_READ_EVENTS).all()
            )
            conn.rollback()
        return {
            "robots": dict(sorted(robots.items())),
            "sessions": dict(sorted(sessions.items())),
            "plans": dict(sorted(plans.items())),
            "events": events,
        }

    def invariants(self, state: State) -> list[str]:
        return invariants(state)

    def reset(self) -> None:
        with self.engine.begin() as conn:
            for statement in _DELETE_ALL:
                conn.execute(statement)

    def dispose(self) -> None:
        try:
            t.metadata.drop_all(self.engine)
        finally:
            self.engine.dispose()


class HumanoidTarget:
    """The training lab, as a uowstress Target."""

    name = "humanoid_training"
    # Every aggregate write is version-checked and cross-aggregate rules lock what they read, so
    # committed state is what some serial order of the units of work would give.
    guarantee = "serializable"
    operations = OPERATIONS
    queries = QUERIES
    workload = WORKLOAD  # what the performance suites load it with
    tables = frozenset(table.name for table in t.metadata.sorted_tables)
    options: Mapping[str, str] = {
        "weaken": "comma-separated weakening switches to turn on: " + ", ".join(Weakenings.names()),
        "sqlite_synchronous": "OFF, NORMAL, FULL (default) or EXTRA",
        "max_payload_bytes": "largest JSON payload the codec accepts (default 1048576)",
    }

    def connect(
        self, url: str, options: Mapping[str, str], *, isolation_level: str | None = None
    ) -> HumanoidSystem:
        unknown = set(options) - set(self.options)
        if unknown:
            raise ValueError(
                f"unknown option(s) {sorted(unknown)} for target {self.name};"
                f" known: {sorted(self.options)}"
            )
        weakenings = Weakenings.parse(options.get("weaken", ""))
        engine_options = EngineOptions(
            isolation_level=isolation_level,
            sqlite_synchronous=options.get("sqlite_synchronous", "FULL").upper(),  # type: ignore[arg-type]
        )
        max_bytes = str(options.get("max_payload_bytes", "1048576")).strip()
        if not (max_bytes.isascii() and max_bytes.isdigit() and int(max_bytes) > 0):
            raise ValueError(
                f"max_payload_bytes {max_bytes!r} is not a whole number of bytes above 0;"
                " e.g. max_payload_bytes=4194304 for 4 MB"
            )
        codec = JsonCodec(max_bytes=int(max_bytes))
        engine = make_engine(url, engine_options)
        t.metadata.create_all(engine)
        return HumanoidSystem(engine, weakenings, codec)


TARGET = HumanoidTarget()

__all__ = ["TARGET", "HumanoidSystem", "HumanoidTarget", "canonical_state", "invariants"]
