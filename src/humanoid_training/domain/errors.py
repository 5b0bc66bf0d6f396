"""Domain errors: every broken rule raises a subclass of `DomainError` and changes nothing."""


class DomainError(Exception):
    """A domain rule was violated; the aggregate is unchanged."""


class InvalidValue(DomainError):
    """A value object was given a value outside its domain."""


class PrerequisiteNotMet(DomainError):
    """A skill was assessed before its prerequisites reached beginner level."""


class InvalidTransition(DomainError):
    """A status change that the aggregate's life cycle does not allow."""


class EpisodeLimitReached(DomainError):
    """A learning session already holds its maximum number of episodes."""


class EpisodeInProgress(DomainError):
    """An episode is pending or running where none may be."""


class ActiveSessionExists(DomainError):
    """The robot already has an active or paused learning session."""


class CurriculumError(DomainError):
    """A curriculum plan rule was violated (stage order, prerequisites, advancement)."""


class NotFound(DomainError):
    """An aggregate with that id does not exist."""
