"""SIGTERM interrupts like Ctrl-C, so that a stopped run still cleans up."""

from __future__ import annotations

import os
import signal
import time
import weakref
from collections.abc import Iterator

import pytest

from uowstress import interrupts
from uowstress.interrupts import merge_repeated_interrupts, restore_sigterm, stop_cleanly_on_sigterm


@pytest.fixture
def default_sigterm() -> Iterator[None]:
    saved = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


@pytest.mark.usefixtures("default_sigterm")
def test_sigterm_raises_keyboard_interrupt_until_restored() -> None:
    assert stop_cleanly_on_sigterm()
    with pytest.raises(KeyboardInterrupt, match="stopped by SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
    restore_sigterm()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.usefixtures("default_sigterm")
def test_a_handler_of_the_program_is_left_alone() -> None:
    def own(signum: int, frame: object) -> None:
        return None

    signal.signal(signal.SIGTERM, own)
    assert not stop_cleanly_on_sigterm()
    restore_sigterm()
    assert signal.getsignal(signal.SIGTERM) is own


@pytest.mark.usefixtures("default_sigterm")
def test_a_forked_child_dies_of_sigterm_as_usual() -> None:
    # Not unwinding through its parent's cleanup (which would drop the parent's databases).
    assert stop_cleanly_on_sigterm()
    try:
        pid = os.fork()
        if pid == 0:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                os._exit(3)  # reached only when SIGTERM did not end the child
        _, status = os.waitpid(pid, 0)
    finally:
        restore_sigterm()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


@pytest.fixture
def default_sigint() -> Iterator[None]:
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


@pytest.mark.usefixtures("default_sigint")
def test_one_ctrl_c_delivered_twice_interrupts_once_and_a_later_one_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    merge_repeated_interrupts()
    assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    now = [1000.0]
    monkeypatch.setattr(interrupts.time, "monotonic", lambda: now[0])
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    now[0] += 0.2  # `uv run` forwarding the same Ctrl-C, during the cleanup
    os.kill(os.getpid(), signal.SIGINT)
    now[0] += interrupts.REPEAT_WINDOW_S
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.usefixtures("default_sigint")
def test_a_ctrl_c_handler_of_the_program_is_left_alone() -> None:
    def own(signum: int, frame: object) -> None:
        return None

    signal.signal(signal.SIGINT, own)
    merge_repeated_interrupts()
    assert signal.getsignal(signal.SIGINT) is own


def _signal_inside_a_weakref_callback(signum: int) -> None:
    """Deliver `signum` where Python drops exceptions: its handler runs inside a weak
    reference's callback, and the KeyboardInterrupt it raises is printed and lost."""

    class Thing:
        pass

    thing = Thing()
    keep = weakref.ref(thing, lambda _ref: os.kill(os.getpid(), signum))
    del thing  # the callback runs now, and the handler inside it
    assert keep() is None


@pytest.mark.usefixtures("default_sigterm")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_python_dropped_is_raised_again_at_the_next_safe_point() -> None:
    assert stop_cleanly_on_sigterm()
    try:
        _signal_inside_a_weakref_callback(signal.SIGTERM)  # nothing raised here
        with pytest.raises(KeyboardInterrupt, match="stopped by SIGTERM"):
            interrupts.raise_if_lost()
        interrupts.raise_if_lost()  # raised once
        # One that reached the run and was reported there is not raised again.
        interrupts._last_interrupt = None  # a later interrupt, not the same one twice
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
        interrupts.acknowledge()
        interrupts.raise_if_lost()
    finally:
        restore_sigterm()
