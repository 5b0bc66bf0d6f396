"""The child process of the durability check: runs committed transactions until it is killed.

Started once per run as `python -m uowstress.stateful._durability_child <target spec>`, it
imports the target (the slow part) and then serves kills: for each JSON line on stdin (the
database URL, target spec, options, isolation level and steps) it forks a worker. The worker is
a fresh process that has never opened a database: it connects the target to the database the
parent has prepared and runs the steps through its own Units of Work. The parent SIGKILLs the
worker; this process reaps it and waits for the next line. End of input: it leaves.

Protocol lines on stdout (the worker and this process share the stream, never at once):

    pid <n>                the worker of this request is process n (sent before it starts)
    ready @<t>             the worker connected; about to run the first step
    step <i> ok @<t>       step i ("begin" or "apply") returned
    step <i> raised <T> @<t>   step i raised an exception of type T (the model may expect that)
    step <i> commit @<t>   step i, a "commit", starts: the Unit of Work's commit() is called
    ack <k> @<t>           the k-th commit returned: the Unit of Work acknowledged it
    done                   every step ran; the worker waits to be killed
    error <json text>      the worker cannot go on; it waits to be killed
    reaped <n> <status>    process n is gone: "killed <signal number>" or "exited <code>"

<t> is when the worker wrote the line, by `clock_ns`: the parent times its kill from it, and
records how long after the worker's last report the kill was sent.

Neither process ever disposes the System (that would drop the schema the parent owns) or runs
interpreter shutdown: they leave with os._exit.

Self-test hook of the checker: with UOWSTRESS_DURABILITY_ACK_EARLY=1 in its environment the
worker writes each "ack" *before* committing, as a Unit of Work that reported success too early
would, and pauses briefly before the commit (as a commit still on its way to disk), so that a
kill right after the acknowledgement lands before the commit. The parent must then report an
acknowledged commit as lost; the tests use this to show that the check can fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time
import traceback
from typing import Any, NoReturn

ACK_EARLY_ENV = "UOWSTRESS_DURABILITY_ACK_EARLY"
# Long beside the parent's reaction to an ack (well under a millisecond when not starved).
ACK_EARLY_PAUSE_S = 0.05
_PR_SET_PDEATHSIG = 1


class _Channel:
    """The protocol stream: a private copy of the original stdout, written unbuffered so that
    each line is in the pipe before the next statement runs."""

    def __init__(self) -> None:
        self.fd = os.dup(1)
        # Whatever the target prints goes to stderr and cannot be taken for a protocol line.
        os.dup2(2, 1)

    def send(self, line: str) -> None:
        data = (line + "\n").encode()
        while data:
            written = os.write(self.fd, data)
            data = data[written:]


def clock_ns() -> int:
    """The system's monotonic clock, in nanoseconds: one clock for every process (the
    parent compares the worker's readings with its own)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _die_with_parent() -> None:
    # A parent that dies without killing us (itself SIGKILLed) must not leave us running.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() == 1:
        os._exit(3)


def _wait_for_kill(parent: int) -> NoReturn:
    # Where the death signal is not available, a parent that is gone shows as a new parent.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _run(channel: _Channel, request: dict[str, Any]) -> None:
    from uowstress.target import load_target

    # Imported already by the server process: load_target finds the module cached.
    target = load_target(request["target"])
    system = target.connect(
        request["url"], request["options"], isolation_level=request.get("isolation_level")
    )
    operations = {op.name: op for op in target.operations}
    ack_early = os.environ.get(ACK_EARLY_ENV) == "1"
    channel.send(f"ready @{clock_ns()}")
    uow: Any = None
    commits = 0
    for index, step in enumerate(request["steps"]):
        action = step["action"]
        if action == "begin":
            uow = system.unit_of_work()
            uow.__enter__()
            channel.send(f"step {index} ok @{clock_ns()}")
        elif action == "apply":
            try:
                operations[step["op"]].apply(uow, step.get("args", {}))
            except Exception as error:
                # A refusal the model also makes: the transaction goes on, as in the executor.
                channel.send(f"step {index} raised {type(error).__name__} @{clock_ns()}")
            else:
                channel.send(f"step {index} ok @{clock_ns()}")
        elif action == "commit":
            commits += 1
            channel.send(f"step {index} commit @{clock_ns()}")
            if ack_early:
                channel.send(f"ack {commits} @{clock_ns()}")
                time.sleep(ACK_EARLY_PAUSE_S)
            uow.commit()
            uow.__exit__(None, None, None)
            uow = None
            if not ack_early:
                channel.send(f"ack {commits} @{clock_ns()}")
        else:
            raise ValueError(f"step {index}: the durability child cannot run action {action!r}")
    channel.send("done")


def _worker(channel: _Channel, request: dict[str, Any], go: int, server: int) -> NoReturn:
    _die_with_parent()
    try:
        # Not a step before the server has told the parent which process to kill.
        os.read(go, 1)
        os.close(go)
        _run(channel, request)
    except BaseException as error:
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        with contextlib.suppress(OSError):
            channel.send("error " + json.dumps(f"{type(error).__name__}: {error}"))
    _wait_for_kill(server)


def _load_driver(url: str) -> None:
    # SQLAlchemy imports a dialect and its driver at the first engine; imported here, once,
    # instead of in every worker. Nothing connects: a fork must not share a connection.
    from sqlalchemy.engine import make_url

    with contextlib.suppress(Exception):  # the worker's connect reports any real problem
        make_url(url).get_dialect().import_dbapi()


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed {os.WTERMSIG(status)}"
    return f"exited {os.WEXITSTATUS(status) if os.WIFEXITED(status) else status}"


def main() -> None:
    _die_with_parent()
    channel = _Channel()
    try:
        # Imported after the death signal is set, so a slow import cannot outlive the parent.
        from uowstress.target import load_target

        if len(sys.argv) > 1:
            load_target(sys.argv[1])
        while line := sys.stdin.readline():
            request = json.loads(line)
            _load_driver(request["url"])
            go_read, go_write = os.pipe()
            server = os.getpid()
            pid = os.fork()
            if pid == 0:
                os.close(go_write)
                _worker(channel, request, go_read, server)
            os.close(go_read)
            channel.send(f"pid {pid}")
            os.write(go_write, b"x")
            os.close(go_write)
            _, status = os.waitpid(pid, 0)
            channel.send(f"reaped {pid} {_status(status)}")
    except BaseException as error:
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        with contextlib.suppress(OSError):
            channel.send("error " + json.dumps(f"{type(error).__name__}: {error}"))
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
