"""A robot's assessment history: append-only, and read from storage only when it is read.

Assessing a robot appends to its history and must refuse an assessment id the history already
holds; neither needs the stored history in memory. A robot loaded from storage therefore holds
the length of its stored history and two callbacks, one that reads the stored entries and one
that asks whether they hold an id, so that the cost of an assessment does not grow with the
robot's past (a robot with 10,000 assessments took 107 ms per assessment when every load read
them all). Since the history is append-only, the first `length` stored entries never change:
reading them later, even in another transaction, gives what the load would have given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, overload

from humanoid_training.domain.errors import InvalidValue
from humanoid_training.domain.values import SkillAssessment


class AssessmentHistory(Sequence[SkillAssessment]):
    """An ordered, append-only list of assessments whose stored part may not be read yet."""

    __slots__ = ("_added", "_answers", "_holds", "_ids", "_length", "_read", "_stored")

    def __init__(self, assessments: Iterable[SkillAssessment] = ()) -> None:
        """A history held in full, as given."""
        self._stored: list[SkillAssessment] | None = list(assessments)
        self._length = len(self._stored)
        self._read: Callable[[], list[SkillAssessment]] | None = None
        self._holds: Callable[[str], bool] | None = None
        self._added: list[SkillAssessment] = []
        # Held in full: every entry is in _stored. Not read yet: _length stored entries, then
        # _added. The ids of every entry in memory, either way:
        self._ids = {a.id for a in self._stored}
        if len(self._ids) != len(self._stored):
            raise InvalidValue("assessment ids must be unique within a robot's history")
        # What `holds` asked the storage about the stored part, by id (the answers never change).
        self._answers: dict[str, bool] = {}

    @classmethod
    def stored(
        cls,
        length: int,
        read: Callable[[], list[SkillAssessment]],
        holds: Callable[[str], bool],
    ) -> AssessmentHistory:
        """A history of `length` stored entries, read by `read` on first use; `holds(id)` says
        whether they hold an assessment id without reading them."""
        history = cls()
        history._stored = None
        history._length = length
        history._read = read
        history._holds = holds
        return history

    @classmethod
    def following(cls, history: AssessmentHistory) -> AssessmentHistory:
        """A history that starts as `history` does and grows on its own (a trial of changes
        that `history` only takes if they all succeed)."""
        return cls.stored(len(history), lambda: list(history), history.holds)

    @property
    def is_read(self) -> bool:
        """Whether the stored entries are in memory."""
        return self._stored is not None

    def append(self, assessment: SkillAssessment) -> None:
        if self._stored is not None:
            self._stored.append(assessment)
        else:
            self._added.append(assessment)
        self._ids.add(assessment.id)

    def holds(self, assessment_id: str) -> bool:
        """Whether an assessment with this id is in the history (asks the storage, once per id,
        when the stored entries are not in memory)."""
        if assessment_id in self._ids:
            return True
        if self._stored is not None or self._holds is None:
            return False
        if assessment_id not in self._answers:
            self._answers[assessment_id] = self._holds(assessment_id)
        return self._answers[assessment_id]

    def _all(self) -> list[SkillAssessment]:
        """Every entry, the stored ones read first if need be."""
        if self._stored is None:
            assert self._read is not None  # set whenever the stored part is not in memory
            stored = self._read()
            if len(stored) != self._length:
                raise RuntimeError(
                    f"the stored history has {len(stored)} entries where {self._length} were"
                    " loaded: the storage rewrote an append-only history"
                )
            self._ids.update(a.id for a in stored)
            self._stored, self._added, self._answers = stored + self._added, [], {}
        return self._stored

    def __len__(self) -> int:
        if self._stored is not None:
            return len(self._stored)
        return self._length + len(self._added)

    @overload
    def __getitem__(self, index: int) -> SkillAssessment: ...

    @overload
    def __getitem__(self, index: slice) -> list[SkillAssessment]: ...

    def __getitem__(self, index: int | slice) -> SkillAssessment | list[SkillAssessment]:
        if (
            isinstance(index, slice)
            and self._stored is None
            and index.step is None
            and index.stop is None
            and index.start is not None
            and index.start >= self._length
        ):
            # What was added since the load (what a save writes): no need to read the rest.
            return self._added[index.start - self._length :]
        entries = self._all()
        if isinstance(index, slice):
            return list(entries[index])
        return entries[index]

    def __iter__(self) -> Iterator[SkillAssessment]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AssessmentHistory | list | tuple):
            return len(self) == len(other) and self._all() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self._stored is None:
            return f"AssessmentHistory({self._length} stored, not read; added {self._added!r})"
        return f"AssessmentHistory({self._all()!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> AssessmentHistory:
        # Assessments are immutable (see SkillAssessment.__deepcopy__): a copy shares them.
        return AssessmentHistory(self._all())


def as_history(entries: Sequence[SkillAssessment] | AssessmentHistory) -> AssessmentHistory:
    """`entries` as a history (a list given to a robot is copied into one)."""
    return entries if isinstance(entries, AssessmentHistory) else AssessmentHistory(entries)
