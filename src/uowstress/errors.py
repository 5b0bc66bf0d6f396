"""The one exception hierarchy of uowstress; each message says what to do instead."""


class UowstressError(Exception):
    """Base of every error uowstress raises on purpose."""


class ConfigError(UowstressError):
    """A configuration file or option is invalid."""


class DatabaseUnreachable(UowstressError):
    """A database URL does not answer."""


class UnsafeDatabase(UowstressError):
    """The database holds tables uowstress did not create."""


class ReproducerError(UowstressError):
    """A reproducer file is malformed or belongs to another target."""


class ReportError(UowstressError):
    """A report or baseline file cannot be read, or a report cannot be written."""


class LeftUndone(UserWarning):
    """Something the run changed and could not put back as it was (a SQLite file's journal
    mode, say); the message says what to run to do it by hand."""


class FaultsNotInjected(UserWarning):
    """A state machine drew faults it could not inject: the system's Unit of Work never called
    the fault hook at their points. The message says how many and what to do."""


class NothingToReplay(UowstressError):
    """A run that only replays saved failures (the replay profile) found none saved."""
