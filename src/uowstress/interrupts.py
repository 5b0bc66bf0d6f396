"""SIGTERM handled as Ctrl-C is: the run stops, and what it set up is dropped on the way out;
one interrupt delivered twice taken once; and none lost.

A CI job that times out, or `kill`, sends SIGTERM; by default it ends the process where it
stands, leaving the run's scratch schemas and databases on the servers and its SQLite files
behind. Raised as KeyboardInterrupt in the main thread, it unwinds through the same cleanup as
an interrupt from the keyboard.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType

# An interrupt this soon after the last is the same one again: a terminal's Ctrl-C reaches
# the whole process group, and `uv run` forwards it to its child too, so the run gets it twice
# and the second would land in the cleanup the first started (a CI runner's SIGTERM to the
# group likewise). A later one is the user insisting, and interrupts the cleanup.
REPEAT_WINDOW_S = 2.0
_last_interrupt: float | None = None
# The interrupt raised and not yet seen to reach the run. Python runs a signal handler between
# any two bytecodes, garbage collector and weak reference callbacks included, and an exception
# raised there is printed and dropped: the run would go on as if never interrupted. Until the
# run reports the interrupt (acknowledge), raise_if_lost raises it again at a safe point.
_pending: KeyboardInterrupt | None = None


def _interrupted(signum: int, frame: FrameType | None) -> None:
    global _last_interrupt, _pending
    now = time.monotonic()
    if _last_interrupt is not None and now - _last_interrupt < REPEAT_WINDOW_S:
        return
    _last_interrupt = now
    name = signal.Signals(signum).name
    _pending = KeyboardInterrupt("" if signum == signal.SIGINT else f"stopped by {name}")
    raise _pending


def acknowledge() -> None:
    """The run has seen the interrupt (it is unwinding, or has stopped): nothing is pending."""
    global _pending
    _pending = None


def raise_if_lost() -> None:
    """Raise again an interrupt that was raised where Python drops exceptions. Called where the
    run is between two pieces of work (a test, a step of a state machine): an interrupt that
    did propagate never gets there, since the run is unwinding."""
    global _pending
    lost, _pending = _pending, None
    if lost is not None:
        raise KeyboardInterrupt(*lost.args)


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


def merge_repeated_interrupts() -> None:
    """Take Ctrl-C through the same handler, so that one Ctrl-C delivered twice interrupts
    once (unless the program already handles it, or this is not the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted)


def restore_sigterm() -> None:
    """Undo stop_cleanly_on_sigterm (only its own handler is removed)."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is _interrupted
    ):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
