"""The relational schema of the training lab (SQLAlchemy Core, no ORM mapping).

Timestamps are integer microseconds since the epoch (UTC) so that every backend stores them
exactly; free-form payloads are JSON text written by the codec, which enforces size limits.
Every table carries the `ht_` prefix so the lab can share a database without clashing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql

# Exact, case-sensitive comparison of ids and names on MySQL/MariaDB.
_MYSQL: dict[str, Any] = {
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mysql_engine": "InnoDB",
}

metadata = MetaData()
# JSON payloads: MySQL/MariaDB's TEXT holds only 64 KB, less than the codec admits (1 MB by
# default); LONGTEXT holds what any configured limit allows.
Payload = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

ID = String(64)
Micros = BigInteger

robots = Table(
    "ht_robots",
    metadata,
    Column("id", ID, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("name", String(100), nullable=False),
    Column("robot_type", String(32), nullable=False),
    Column("configuration", Payload, nullable=False),
    **_MYSQL,
)

robot_skills = Table(
    "ht_robot_skills",
    metadata,
    Column("robot_id", ID, ForeignKey("ht_robots.id"), primary_key=True),
    Column("skill", String(32), primary_key=True),
    Column("score", Double, nullable=False),
    Index("ix_ht_robot_skills_skill_score", "skill", "score"),
    **_MYSQL,
)

assessments = Table(
    "ht_assessments",
    metadata,
    Column("id", ID, primary_key=True),
    Column("robot_id", ID, ForeignKey("ht_robots.id"), nullable=False),
    # Position in the robot's append-only history.
    Column("seq", Integer, nullable=False),
    Column("skill", String(32), nullable=False),
    Column("score", Double, nullable=False),
    Column("confidence", Double, nullable=False),
    Column("evidence", Double, nullable=False),
    Column("assessed_at", Micros, nullable=False),
    Index("ix_ht_assessments_robot_seq", "robot_id", "seq"),
    **_MYSQL,
)

plans = Table(
    "ht_plans",
    metadata,
    Column("id", ID, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("robot_id", ID, ForeignKey("ht_robots.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("current_stage_index", Integer, nullable=False),
    # With the id, the index also yields the finders' ORDER BY id: SQLite would otherwise
    # prefer scanning the whole primary key in order to sorting the matches.
    Index("ix_ht_plans_status", "status", "id"),
    Index("ix_ht_plans_robot", "robot_id"),
    **_MYSQL,
)

stages = Table(
    "ht_stages",
    metadata,
    Column("plan_id", ID, ForeignKey("ht_plans.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("target_skills", String(400), nullable=False),
    Column("prerequisite_skills", String(400), nullable=False),
    Column("min_episodes", Integer, nullable=False),
    Column("target_success_rate", Double, nullable=False),
    Column("episodes", Integer, nullable=False),
    Column("successes", Integer, nullable=False),
    **_MYSQL,
)

sessions = Table(
    "ht_sessions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("robot_id", ID, ForeignKey("ht_robots.id"), nullable=False),
    Column("plan_id", ID, ForeignKey("ht_plans.id"), nullable=True),
    Column("status", String(16), nullable=False),
    Column("episodes_completed", Integer, nullable=False),
    Column("episodes_successful", Integer, nullable=False),
    Column("created_at", Micros, nullable=False),
    Index("ix_ht_sessions_status", "status", "id"),  # with the id: see ix_ht_plans_status
    Index("ix_ht_sessions_robot_status", "robot_id", "status"),
    **_MYSQL,
)

episodes = Table(
    "ht_episodes",
    metadata,
    Column("id", ID, primary_key=True),
    Column("session_id", ID, ForeignKey("ht_sessions.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("outcome", String(16), nullable=True),
    Column("reward", Double, nullable=True),
    Column("metrics", Payload, nullable=True),
    Column("started_at", Micros, nullable=True),
    Column("ended_at", Micros, nullable=True),
    UniqueConstraint("session_id", "number", name="uq_ht_episodes_session_number"),
    **_MYSQL,
)

outbox = Table(
    "ht_outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("event_id", ID, nullable=False, unique=True),
    Column("aggregate_type", String(16), nullable=False),
    Column("aggregate_id", ID, nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("payload", Payload, nullable=False),
    Column("occurred_at", Micros, nullable=False),
    Index("ix_ht_outbox_aggregate", "aggregate_id"),
    **_MYSQL,
)

ALL_TABLES = tuple(metadata.sorted_tables)
