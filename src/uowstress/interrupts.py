"""SIGTERM handled as Ctrl-C is: the run stops, and what it set up is dropped on the way out.

A CI job that times out, or `kill`, sends SIGTERM; by default it ends the process where it
stands, leaving the run's scratch schemas and databases on the servers and its SQLite files
behind. Raised as KeyboardInterrupt in the main thread, it unwinds through the same cleanup as
an interrupt from the keyboard.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def _in_child() -> None:
    # A child forked from the run (multiprocessing, os.fork) dies of SIGTERM as usual, rather
    # than unwinding through its parent's cleanup.
    if signal.getsignal(signal.SIGTERM) is _interrupted:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_in_child)


def stop_cleanly_on_sigterm() -> bool:
    """Make SIGTERM interrupt the run like Ctrl-C, unless the program already handles it (or
    this is not the main thread, where Python delivers signals). Whether it was set here."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _interrupted)
    return True


def restore_sigterm() -> None:
    """Undo stop_cleanly_on_sigterm (only its own handler is removed)."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is _interrupted
    ):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
