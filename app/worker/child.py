"""A worker child: runs one task at a time for its supervisor.

Forked by the pool's fork server (app/worker/forkserver.py), or started by the
supervisor as ``python -m app.worker.child FD_IN FD_OUT FD_LIFELINE SUPERVISOR_PID
WORKER_ID`` when the plugins cannot be loaded before a fork; in a session of its own
(so a timeout or cancel kills the child and everything its plugin started in that
session with one ``killpg``; the supervisor also kills what left it, see
app/worker/tree.py).  It never opens a Redis or
ClickHouse connection: tasks come in on FD_IN, progress and results go out on FD_OUT.

Before anything else it asks to be SIGKILLed when the supervisor dies and forks its
guard (app/worker/lifeline.py), becomes a child subreaper (orphans of what its plugins
start stay below it), and marks the environment its plugins' programs inherit with the
pool's id (app/worker/procs.py).  Then it serves tasks (app/worker/child_loop.py).
"""

from __future__ import annotations

import os
import signal
import sys

# only what the first steps need: the guard forks before anything heavier is imported
# (it keeps the memory the child had then); the task loop is in app.worker.child_loop
from app.worker.lifeline import die_with_parent, start_guard
from app.worker.procs import POOL_MARKER, become_subreaper, marker_entry


def _kill_group(*_: object) -> None:
    os.killpg(0, signal.SIGKILL)


def start_child(fd_in: int, fd_out: int, fd_life: int, parent: int, worker_id: str) -> None:
    """The first steps, before any thread or plugin code runs: die with the parent (the
    supervisor, or the fork server that dies with it: the parent-death signal) and with
    the supervisor (the guard), keep orphans, mark what plugins start."""
    start_guard(fd_life, (fd_in, fd_out), marker_entry(worker_id))  # first: the lightest
    os.close(fd_life)  # the guard holds it
    die_with_parent(parent)  # (had the supervisor died already, the guard kills us too)
    become_subreaper()
    signal.signal(signal.SIGTERM, _kill_group)  # a plugin may replace it
    os.environ[POOL_MARKER] = worker_id  # for the programs plugins start, not for us


def main(argv: list[str]) -> int:
    fd_in, fd_out, fd_life, parent = (int(a) for a in argv[:4])
    start_child(fd_in, fd_out, fd_life, parent, argv[4] if len(argv) > 4 else str(parent))
    from app.worker.child_loop import serve

    return serve(fd_in, fd_out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
