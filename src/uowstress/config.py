"""performance_config.yaml: schema, validation, per-backend thresholds and judging.

Thresholds come in three tiers: ``critical`` (a run worse than it fails), ``warning`` (worse
than it is reported) and ``optimal`` (the target). Memory is in MB of 2**20 bytes.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self, TypeGuard

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from uowstress.errors import ConfigError

__all__ = [
    "BACKENDS",
    "BYTES_PER_MB",
    "DEFAULT_CONFIG_FILE",
    "METRICS",
    "TIER_NAMES",
    "BackendOverrides",
    "Backends",
    "MetricSpec",
    "PartialTierThresholds",
    "PerformanceConfig",
    "ThresholdOverrides",
    "Thresholds",
    "Tier",
    "TierThresholds",
    "Verdict",
    "Workloads",
    "judge",
    "judge_all",
    "load_config",
    "parse_config",
    "verdict",
]

BYTES_PER_MB: Final = 1024 * 1024
DEFAULT_CONFIG_FILE: Final = "performance_config.yaml"
BACKENDS: Final = ("sqlite", "postgresql", "mysql")
TIER_NAMES: Final = ("critical", "warning", "optimal")
BackendName = Literal["sqlite", "postgresql", "mysql"]

# The description of each constrained type is what error messages say is expected.
PositiveFloat = Annotated[float, Field(gt=0, description="a number > 0")]
PositiveInt = Annotated[int, Field(ge=1, description="an integer >= 1")]
Rate = Annotated[
    float, Field(ge=0, le=1, description="a fraction between 0 and 1 (0.8 means 80 %)")
]
# The scenarios that check that contention happened: one thread alone never conflicts, so
# they would fail whatever the system under test does.
# Upper bounds on the workload sizes: past them a scenario would not end in any time a run has
# (a count) or would exhaust the machine (threads, a single document's size), so a typo (an
# extra digit or three) is refused with the file's line rather than found hours later.
MAX_COUNT = 100_000_000
MAX_THREADS = 1024
MAX_DOCUMENT_KB = 1_048_576  # 1 GiB

ContendingThreads = Annotated[
    int,
    Field(
        ge=2,
        le=MAX_THREADS,
        description=f"an integer from 2 (one thread alone never conflicts) to {MAX_THREADS}",
    ),
]
Count = Annotated[int, Field(ge=1, le=MAX_COUNT, description=f"an integer from 1 to {MAX_COUNT:,}")]


class _Model(BaseModel):
    # strict: YAML already gives numbers as numbers, so a quoted "10" is a mistake to report,
    # not a string to coerce. Finite only: .inf / .nan are never meaningful budgets.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricSpec:
    """A metric that thresholds apply to: its unit and which direction is better."""

    name: str
    higher_is_better: bool
    unit: str
    description: str

    def format(self, value: float) -> str:
        if self.unit == "%":
            return f"{round(float(value) * 100, 2)} %"
        return f"{round(float(value), 4)} {self.unit}"

    def format_pair(self, value: float, threshold: float) -> tuple[str, str]:
        """``value`` and ``threshold``, with as many significant digits as it takes for them
        to read differently when they differ: rounded alike, a value over its threshold read
        as equal to it ("0.002 s exceeds 0.002 s"), and a tiny threshold as 0."""
        shown = self.format(value), self.format(threshold)
        pairs = zip((value, threshold), shown, strict=True)
        lost = any(x != 0 and float(text.split()[0]) == 0 for x, text in pairs)
        if not lost and (shown[0] != shown[1] or value == threshold):
            return shown
        scale = 100.0 if self.unit == "%" else 1.0
        for digits in range(4, 18):
            shown = (
                f"{float(value) * scale:.{digits}g} {self.unit}",
                f"{float(threshold) * scale:.{digits}g} {self.unit}",
            )
            if shown[0] != shown[1] or value == threshold:
                break
        return shown


METRICS: Final[Mapping[str, MetricSpec]] = {
    spec.name: spec
    for spec in (
        MetricSpec("memory_mb", False, "MB", "peak memory of the run"),
        MetricSpec("avg_transaction_s", False, "s", "average transaction time"),
        MetricSpec("success_rate", True, "%", "committed operations / all operations"),
        MetricSpec("deadlock_rate", False, "%", "deadlocked operations / all operations"),
        MetricSpec("step_p95_s", False, "s", "95th percentile time of a state-machine step"),
        MetricSpec("step_max_s", False, "s", "slowest state-machine step"),
        MetricSpec("example_memory_mb", False, "MB", "memory growth over one Hypothesis example"),
    )
}


# --------------------------------------------------------------------------- schema


class TierThresholds(_Model):
    """The limits of one tier, one per metric of ``METRICS``."""

    memory_mb: PositiveFloat
    avg_transaction_s: PositiveFloat
    success_rate: Rate
    deadlock_rate: Rate
    step_p95_s: PositiveFloat
    step_max_s: PositiveFloat
    example_memory_mb: PositiveFloat

    def value(self, metric: str) -> float:
        return float(getattr(self, metric))


_DEFAULT_TIERS: Final[Mapping[str, Mapping[str, float]]] = {
    "critical": {
        "memory_mb": 4096.0,
        "avg_transaction_s": 5.0,
        "success_rate": 0.50,
        "deadlock_rate": 0.50,
        "step_p95_s": 2.0,
        "step_max_s": 10.0,
        "example_memory_mb": 1024.0,
    },
    "warning": {
        "memory_mb": 1024.0,
        "avg_transaction_s": 1.0,
        "success_rate": 0.80,
        "deadlock_rate": 0.20,
        "step_p95_s": 0.5,
        "step_max_s": 2.0,
        "example_memory_mb": 256.0,
    },
    "optimal": {
        "memory_mb": 500.0,
        "avg_transaction_s": 0.1,
        "success_rate": 0.95,
        "deadlock_rate": 0.05,
        "step_p95_s": 0.05,
        "step_max_s": 0.5,
        "example_memory_mb": 50.0,
    },
}


def _default_tier(name: str) -> TierThresholds:
    return TierThresholds.model_validate(_DEFAULT_TIERS[name])


class Thresholds(_Model):
    """The three tiers. A tier given partially takes its other metrics from the defaults."""

    critical: TierThresholds = Field(default_factory=lambda: _default_tier("critical"))
    warning: TierThresholds = Field(default_factory=lambda: _default_tier("warning"))
    optimal: TierThresholds = Field(default_factory=lambda: _default_tier("optimal"))

    @model_validator(mode="before")
    @classmethod
    def _fill_from_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        filled = dict(data)
        for tier in TIER_NAMES:
            given = filled.get(tier)
            if isinstance(given, Mapping):
                filled[tier] = {**_DEFAULT_TIERS[tier], **given}
        return filled

    def tier(self, name: str) -> TierThresholds:
        if name not in TIER_NAMES:
            raise ValueError(f"unknown tier {name!r}; tiers are {', '.join(TIER_NAMES)}")
        tier: TierThresholds = getattr(self, name)
        return tier


class PartialTierThresholds(_Model):
    """Overrides of some metrics of one tier."""

    memory_mb: PositiveFloat | None = None
    avg_transaction_s: PositiveFloat | None = None
    success_rate: Rate | None = None
    deadlock_rate: Rate | None = None
    step_p95_s: PositiveFloat | None = None
    step_max_s: PositiveFloat | None = None
    example_memory_mb: PositiveFloat | None = None

    def given(self) -> dict[str, float]:
        return {key: value for key, value in self.model_dump().items() if value is not None}


class ThresholdOverrides(_Model):
    critical: PartialTierThresholds = Field(default_factory=PartialTierThresholds)
    warning: PartialTierThresholds = Field(default_factory=PartialTierThresholds)
    optimal: PartialTierThresholds = Field(default_factory=PartialTierThresholds)


class BackendOverrides(_Model):
    thresholds: ThresholdOverrides = Field(default_factory=ThresholdOverrides)


class Backends(_Model):
    """Per-backend overrides; MariaDB uses the ``mysql`` entry."""

    sqlite: BackendOverrides = Field(default_factory=BackendOverrides)
    postgresql: BackendOverrides = Field(default_factory=BackendOverrides)
    mysql: BackendOverrides = Field(default_factory=BackendOverrides)


class Workloads(_Model):
    """Sizes of the performance scenarios."""

    sequential_transactions: Count = 100
    concurrent_threads: ContendingThreads = 10
    transactions_per_thread: Count = 20
    memory_operations: Count = 500
    bulk_records: Count = 1200
    bulk_batch_size: Count = 50
    deadlock_threads: ContendingThreads = 8
    deadlock_operations: Count = 25
    # Each deadlock-scenario transaction changes 2 or 3 of them, in a drawn order.
    deadlock_resources: Annotated[
        int,
        Field(
            ge=3,
            le=MAX_COUNT,
            description=f"an integer from 3 (each transaction takes up to 3) to {MAX_COUNT:,}",
        ),
    ] = 10
    writers: Count = 20
    writes_per_writer: Count = 50
    training_robots: Count = 20
    assessment_robots: Count = 10
    assessments_per_robot: Count = 100
    curriculum_plans: Count = 15
    curriculum_cycles: Count = 10
    mixed_workers: Count = 12
    large_aggregate_changes: Count = 2000
    payload_kb: Annotated[
        list[
            Annotated[
                int,
                Field(ge=1, le=MAX_DOCUMENT_KB, description="an integer from 1 to 1,048,576"),
            ]
        ],
        Field(
            min_length=1,
            description=f"a list of document sizes in KB (integers from 1 to {MAX_DOCUMENT_KB:,},"
            " 1 GiB)",
        ),
    ] = Field(default_factory=lambda: [1, 64, 512])
    retry_attempts: Count = 5
    scalability_threads: Annotated[
        list[
            Annotated[
                int, Field(ge=1, le=MAX_THREADS, description=f"an integer from 1 to {MAX_THREADS}")
            ]
        ],
        Field(
            min_length=1,
            description=f"a list of distinct thread counts (integers from 1 to {MAX_THREADS})"
            " that includes 1",
        ),
    ] = Field(default_factory=lambda: [1, 2, 4, 8])

    @field_validator("scalability_threads")
    @classmethod
    def _baseline_and_distinct(cls, value: list[int]) -> list[int]:
        if 1 not in value:
            # Scaling efficiency is relative to the single-thread throughput.
            raise ValueError("must include 1, the baseline that scaling efficiency is measured on")
        duplicates = sorted({n for n in value if value.count(n) > 1})
        if duplicates:
            raise ValueError(f"lists {duplicates} more than once; give each thread count once")
        return sorted(value)


class PerformanceConfig(_Model):
    """The whole of performance_config.yaml."""

    thresholds: Thresholds = Field(default_factory=Thresholds)
    backends: Backends = Field(default_factory=Backends)
    workloads: Workloads = Field(default_factory=Workloads)

    @model_validator(mode="after")
    def _consistent_tiers(self, info: ValidationInfo) -> Self:
        # parse_config checks consistency itself, on the raw data, so that these problems
        # are listed together with the schema errors.
        if info.context and info.context.get("skip_consistency"):
            return self
        problems = _consistency_problems(_tiers_of(self.thresholds), _overrides_of(self.backends))
        if problems:
            raise ValueError("; ".join(f"{path}: {text}" for path, text in problems))
        return self

    def thresholds_for(self, backend: str) -> Thresholds:
        """The thresholds with ``backend``'s overrides merged in.

        ``backend`` is ``sqlite``, ``postgresql``, ``mysql`` or ``mariadb`` (which uses
        the ``mysql`` overrides), as in SQLAlchemy dialect names.
        """
        key = "mysql" if backend == "mariadb" else backend
        if key not in BACKENDS:
            raise ConfigError(
                f"no thresholds for backend {backend!r}; use one of {', '.join(BACKENDS)} "
                "(or mariadb)"
            )
        overrides: BackendOverrides = getattr(self.backends, key)
        tiers = {}
        for tier in TIER_NAMES:
            base: TierThresholds = getattr(self.thresholds, tier)
            given = getattr(overrides.thresholds, tier).given()
            tiers[tier] = base.model_copy(update=given) if given else base
        return Thresholds(**tiers)


# --------------------------------------------------------------------------- consistency

_Tiers = dict[str, dict[str, float]]
_Problem = tuple[str, str]  # (dotted key path, what is wrong and what is expected)

# Pairs (stricter, looser): each tier must be at least as strict as the one after it.
_TIER_ORDER: Final = (("warning", "critical"), ("optimal", "warning"))


def _is_number(value: object) -> TypeGuard[int | float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _tiers_of(thresholds: Thresholds) -> _Tiers:
    return {tier: getattr(thresholds, tier).model_dump() for tier in TIER_NAMES}


def _overrides_of(backends: Backends) -> dict[str, _Tiers]:
    result: dict[str, _Tiers] = {}
    for backend in BACKENDS:
        overrides: BackendOverrides = getattr(backends, backend)
        result[backend] = {tier: getattr(overrides.thresholds, tier).given() for tier in TIER_NAMES}
    return result


def _in_range(metric: str, value: object) -> bool:
    if not _is_number(value):
        return False
    number = float(value)
    return 0.0 <= number <= 1.0 if METRICS[metric].unit == "%" else number > 0


def _numbers(mapping: object) -> dict[str, float]:
    """The valid metric entries of a raw mapping; the schema check reports the others, so
    an out-of-range value is not reported a second time as a tier inconsistency."""
    if not isinstance(mapping, Mapping):
        return {}
    return {
        str(key): float(value)
        for key, value in mapping.items()
        if key in METRICS and _in_range(key, value)
    }


def _raw_tiers(raw: Mapping[str, Any]) -> _Tiers:
    thresholds = raw.get("thresholds")
    given = thresholds if isinstance(thresholds, Mapping) else {}
    return {tier: {**_DEFAULT_TIERS[tier], **_numbers(given.get(tier))} for tier in TIER_NAMES}


def _raw_overrides(raw: Mapping[str, Any]) -> dict[str, _Tiers]:
    backends = raw.get("backends")
    result: dict[str, _Tiers] = {}
    if not isinstance(backends, Mapping):
        return result
    for backend in BACKENDS:
        entry = backends.get(backend)
        thresholds = entry.get("thresholds") if isinstance(entry, Mapping) else None
        given = thresholds if isinstance(thresholds, Mapping) else {}
        result[backend] = {tier: _numbers(given.get(tier)) for tier in TIER_NAMES}
    return result


def _tier_problems(tiers: _Tiers, path_of: Any) -> list[_Problem]:
    problems: list[_Problem] = []
    for stricter, looser in _TIER_ORDER:
        for metric, spec in METRICS.items():
            strict_value = tiers[stricter][metric]
            loose_value = tiers[looser][metric]
            if spec.higher_is_better:
                wrong, relation, better = strict_value < loose_value, ">=", "higher"
            else:
                wrong, relation, better = strict_value > loose_value, "<=", "lower"
            if wrong:
                problems.append(
                    (
                        path_of(stricter, metric),
                        f"found {strict_value:g} but {path_of(looser, metric)} is "
                        f"{loose_value:g}; expected {stricter} {relation} {looser} "
                        f"({better} {metric} is better, and the {stricter} tier must be at "
                        f"least as strict as the {looser} tier)",
                    )
                )
    for tier in TIER_NAMES:
        p95, slowest = tiers[tier]["step_p95_s"], tiers[tier]["step_max_s"]
        if p95 > slowest:
            problems.append(
                (
                    path_of(tier, "step_p95_s"),
                    f"found {p95:g} but {path_of(tier, 'step_max_s')} is {slowest:g}; "
                    "expected step_p95_s <= step_max_s (a 95th percentile cannot exceed "
                    "the maximum)",
                )
            )
    return problems


def _consistency_problems(base: _Tiers, overrides: Mapping[str, _Tiers]) -> list[_Problem]:
    """Tier-order problems of the base thresholds, then those each backend's overrides add."""

    def base_path(tier: str, metric: str) -> str:
        return f"thresholds.{tier}.{metric}"

    problems = _tier_problems(base, base_path)
    for backend, given in overrides.items():
        if not any(given.values()):
            continue

        def merged_path(tier: str, metric: str, backend: str = backend) -> str:
            if metric in overrides[backend][tier]:
                return f"backends.{backend}.thresholds.{tier}.{metric}"
            return f"thresholds.{tier}.{metric}"

        merged = {tier: {**base[tier], **given[tier]} for tier in TIER_NAMES}
        for path, text in _tier_problems(merged, merged_path):
            # Only the problems an override takes part in; the others are listed above.
            if f"backends.{backend}." in path or f"backends.{backend}." in text:
                problems.append((path, f"{text} (with the {backend} overrides merged in)"))
    return problems


# --------------------------------------------------------------------------- loading


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _dotted(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _model_of(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _walk(loc: Sequence[int | str]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model whose keys live at ``loc`` and the field ``loc`` names (None if unknown)."""
    model: type[BaseModel] | None = PerformanceConfig
    field: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: still the list's field
        if model is None or part not in model.model_fields:
            return None, None
        field = model.model_fields[part]
        model = _model_of(field.annotation)
    return model, field


def _expected(loc: Sequence[int | str]) -> str:
    model, field = _walk(loc)
    if loc and isinstance(loc[-1], int):
        return _entry_expected(loc, field)
    if model is not None:
        return f"a mapping with keys {', '.join(model.model_fields)}"
    if field is not None:
        description = field.description or _metadata_description(field)
        if description:
            return description
    return "a valid value"


def _entry_expected(loc: Sequence[int | str], field: FieldInfo | None) -> str:
    """What one entry of a list field must be, then what that list is for."""
    if field is None:
        return "a valid value"
    entry = "a valid entry"
    # The entry's own description sits on the list's item type (e.g. PositiveInt).
    for arg in getattr(field.annotation, "__args__", ()):
        for metadata in getattr(arg, "__metadata__", ()):
            description = getattr(metadata, "description", None)
            if description:
                entry = str(description)
    listing = field.description or _metadata_description(field)
    if not listing:
        return entry
    name = next(str(part) for part in reversed(loc) if isinstance(part, str))
    return f"{entry}; {name} is {listing}"


def _metadata_description(field: FieldInfo) -> str | None:
    # Optional (override) fields keep the description on the inner Annotated type.
    for metadata in field.metadata:
        description = getattr(metadata, "description", None)
        if description:
            return str(description)
    if field.annotation is not None:
        for arg in getattr(field.annotation, "__args__", ()):
            for metadata in getattr(arg, "__metadata__", ()):
                description = getattr(metadata, "description", None)
                if description:
                    return f"{description} (or null to keep the default)"
    return None


def _unknown_key_text(loc: Sequence[int | str]) -> str:
    key = str(loc[-1])
    container, _ = _walk(loc[:-1])
    valid = list(container.model_fields) if container is not None else []
    text = f"unknown key '{_dotted([str(part) for part in loc])}'"
    if container is Backends and key.lower() == "mariadb":
        return f"{text} (MariaDB uses the 'mysql' key)"
    matches = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if matches:
        return f"{text} (did you mean '{matches[0]}'?)"
    return f"{text} (valid keys here: {', '.join(valid)})"


def _schema_problems(error: ValidationError) -> list[_Problem]:
    """(key path, message) of each schema error; the message names the key itself."""
    problems: list[_Problem] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        kind = item["type"]
        path = _dotted(loc) or "(top level)"
        found = item.get("input")
        if kind == "extra_forbidden":
            problems.append((path, _unknown_key_text(loc)))
        elif kind == "invalid_key":
            problems.append(
                (
                    path,
                    f"{path}: found the key {found!r} ({_type_name(found)}); expected keys are "
                    "names (text)",
                )
            )
        elif kind == "missing":
            problems.append((path, f"{path}: missing; expected {_expected(loc)}"))
        elif kind == "value_error":
            reason = item.get("ctx", {}).get("error", item["msg"])
            problems.append((path, f"{path}: found {found!r} ({_type_name(found)}); {reason}"))
        else:
            problems.append(
                (
                    path,
                    f"{path}: found {found!r} ({_type_name(found)}); expected {_expected(loc)}"
                    + _number_as_text_hint(found),
                )
            )
    return problems


def _number_as_text_hint(found: object) -> str:
    """Why a number the user wrote arrived as text: YAML 1.1 reads an exponent without a dot
    (1e3) or with no sign (1.0e3) as a string, so the message would otherwise read as
    nonsense ("found '1e3' (str); expected a number")."""
    if not isinstance(found, str):
        return ""
    try:
        number = float(found.replace("_", ""))
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""
    if "e" in found.lower():
        plain = format(Decimal(repr(number)), "f")
        if number.is_integer():
            plain = str(int(number))
        return f" (YAML reads {found} as text, not as a number: write {plain})"
    return f" (the quotes make it text: write {found} without them)"


def parse_config(
    data: object, source: str = "<config>", lines: Mapping[str, int] | None = None
) -> PerformanceConfig:
    """Validate already-loaded configuration data (e.g. from YAML).

    Every problem is reported in one ConfigError, each line naming ``source`` and the key,
    and the key's line where ``lines`` (dotted key path -> line number) has it.
    ``None`` (an empty file) means all defaults.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: the top level must be a mapping with the keys "
            f"{', '.join(PerformanceConfig.model_fields)}; found {_type_name(data)} "
            f"{_shorten(data)}. Start the file with 'thresholds:', 'backends:' or 'workloads:'"
        )
    problems: list[_Problem] = []
    config: PerformanceConfig | None = None
    try:
        config = PerformanceConfig.model_validate(data, context={"skip_consistency": True})
    except ValidationError as error:
        problems.extend(_schema_problems(error))
    problems.extend(
        (path, f"{path}: {text}")
        for path, text in _consistency_problems(_raw_tiers(data), _raw_overrides(data))
    )
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        known = lines or {}
        listed = "\n".join(
            f"  {source}:{known[path]}: {text}" if path in known else f"  {source}: {text}"
            for path, text in problems
        )
        raise ConfigError(
            f"invalid performance configuration {source} ({count}); fix these keys, or delete "
            f"them to use the defaults:\n{listed}"
        )
    assert config is not None  # no problems means validation succeeded
    return config


def _shorten(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping repeats a key."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (plain YAML keeps the last silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Hashable, Any]:
    loader.flatten_mapping(node)
    seen: dict[Hashable, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in seen:
            raise _DuplicateKeyError(
                "while constructing a mapping",
                node.start_mark,
                f"the key {key!r} appears twice (first on line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        if isinstance(key, Hashable):
            seen[key] = key_node
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_config(path: str | Path | None = None) -> PerformanceConfig:
    """Read and validate a performance configuration file; ``None`` gives the defaults.

    The defaults equal the ``performance_config.yaml`` shipped at the repository root.
    """
    if path is None:
        return PerformanceConfig()
    file = Path(path)
    try:
        content = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if file.is_symlink():
            raise ConfigError(
                f"performance configuration file {file} is a link to {file.readlink()}, which "
                "does not exist; point the link at your file, or remove it to use the built-in "
                "defaults"
            ) from None
        raise ConfigError(
            f"performance configuration file not found: {file}; check the path, or give no "
            f"file to use the built-in defaults ({DEFAULT_CONFIG_FILE} shows them)"
        ) from None
    except UnicodeDecodeError as error:
        # The line, as for any other problem of the file: a byte offset alone is hard to find.
        line = error.object[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{file}:{line}: not UTF-8 text ({error.reason} at byte {error.start}); save it as"
            " UTF-8"
        ) from None
    except OSError as error:
        raise ConfigError(
            f"cannot read the performance configuration file {file}: {error.strerror}; "
            "check that it is a readable file"
        ) from None
    try:
        data = yaml.load(content, Loader=_UniqueKeyLoader)
    except _DuplicateKeyError as error:
        mark = error.problem_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        raise ConfigError(
            f"{where}: {error.problem}; keep one of them (YAML would silently use the last)"
        ) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        problem = error.problem or error.context or "invalid YAML"
        raise ConfigError(
            f"{where}: YAML syntax error: {problem}; fix the line (check indentation, colons "
            "after keys, and quotes)"
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: YAML error: {error}; fix the file's syntax") from None
    return parse_config(data, source=str(file), lines=_key_lines(content))


def _key_lines(content: str) -> dict[str, int]:
    """The line of each key (and list entry) of a YAML text, by dotted path as problems name
    them (``workloads.payload_kb[0]``), so that a schema problem points at its line."""
    found: dict[str, int] = {}

    def walk(node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                child = f"{path}.{key_node.value}" if path else str(key_node.value)
                found.setdefault(child, key_node.start_mark.line + 1)
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = f"{path}[{i}]"
                found.setdefault(child, item.start_mark.line + 1)
                walk(item, child)

    try:
        root = yaml.compose(content, Loader=_UniqueKeyLoader)
    except yaml.YAMLError:
        return found  # the file loaded, so this does not happen; lines are only a help
    if root is not None:
        walk(root, "")
    return found


# --------------------------------------------------------------------------- judging


class Tier(StrEnum):
    """Where a measured value falls, best first."""

    OPTIMAL = "optimal"
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Verdict:
    metric: str
    value: float
    tier: Tier
    threshold: float
    message: str

    @property
    def failed(self) -> bool:
        """A critical value fails the run."""
        return self.tier is Tier.CRITICAL


def _spec(metric: str) -> MetricSpec:
    spec = METRICS.get(metric)
    if spec is None:
        matches = difflib.get_close_matches(metric, list(METRICS), n=1)
        hint = f"did you mean {matches[0]!r}? " if matches else ""
        raise ValueError(
            f"no thresholds for metric {metric!r}; {hint}known metrics: {', '.join(METRICS)}"
        )
    return spec


def _worse(spec: MetricSpec, value: float, limit: float) -> bool:
    return value < limit if spec.higher_is_better else value > limit


def judge(metric: str, value: float, thresholds: Thresholds) -> Tier:
    """The tier of ``value`` for ``metric``.

    CRITICAL when strictly worse than the critical threshold, WARNING when strictly worse than
    the warning one, OPTIMAL when at least as good as the optimal target, OK in between.
    """
    spec = _spec(metric)
    if math.isnan(value):
        raise ValueError(f"cannot judge {metric} = NaN; the measurement produced no number")
    if _worse(spec, value, thresholds.critical.value(metric)):
        return Tier.CRITICAL
    if _worse(spec, value, thresholds.warning.value(metric)):
        return Tier.WARNING
    if _worse(spec, value, thresholds.optimal.value(metric)):
        return Tier.OK
    return Tier.OPTIMAL


def verdict(metric: str, value: float, thresholds: Thresholds) -> Verdict:
    """``judge`` with the deciding threshold and a sentence for the report."""
    tier = judge(metric, value, thresholds)
    spec = METRICS[metric]
    worse = "is below" if spec.higher_is_better else "exceeds"
    if tier is Tier.CRITICAL:
        threshold = thresholds.critical.value(metric)
        shown, limit = spec.format_pair(value, threshold)
        message = f"{metric} = {shown} {worse} the critical threshold {limit}"
    elif tier is Tier.WARNING:
        threshold = thresholds.warning.value(metric)
        shown, limit = spec.format_pair(value, threshold)
        message = f"{metric} = {shown} {worse} the warning threshold {limit}"
    elif tier is Tier.OK:
        threshold = thresholds.optimal.value(metric)
        shown, limit = spec.format_pair(value, threshold)
        beside_warning, warning = spec.format_pair(value, thresholds.warning.value(metric))
        # The value as precise as either comparison needs: 0.000967 within a warning threshold
        # of 0.001 must not read "0.001 s is within the warning threshold 0.001 s".
        shown = max(shown, beside_warning, key=len)
        message = (
            f"{metric} = {shown} is within the warning threshold {warning} but misses the"
            f" optimal target {limit}"
        )
    else:
        threshold = thresholds.optimal.value(metric)
        shown, limit = spec.format_pair(value, threshold)
        message = f"{metric} = {shown} meets the optimal target {limit}"
    return Verdict(metric=metric, value=value, tier=tier, threshold=threshold, message=message)


def judge_all(values: Mapping[str, float], thresholds: Thresholds) -> list[Verdict]:
    """Verdicts for every measured metric, in the order given."""
    return [verdict(metric, value, thresholds) for metric, value in values.items()]
