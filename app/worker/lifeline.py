"""How a worker child dies with its supervisor, whatever it is doing.

A child may be stuck in C code that holds the GIL and ignores SIGTERM: no Python
signal handler and no thread of its own runs then.  So:

- :func:`die_with_parent`: the kernel sends the child **SIGKILL** when the supervisor
  dies (``PR_SET_PDEATHSIG``), set before any plugin code runs; if the supervisor is
  already gone by then (it died while the child started), the child exits at once.
- :func:`start_guard`: a *guard* process, forked from the child before it imports
  anything, sits in the child's process group and blocks on the lifeline pipe, whose
  write end only the supervisor holds.  When the supervisor dies the read returns
  end-of-file, and the guard SIGKILLs every process this pool's plugins started with
  an inherited environment (marked with :data:`app.worker.procs.POOL_MARKER`, also in
  other sessions) and their process groups, then its own group: the child's, with
  whatever the plugin left in it.  The guard runs no plugin code, ignores SIGTERM,
  SIGINT and SIGHUP, and holds none of the child's pipes.

The parent-death signal alone would leave the child's group behind (SIGKILL runs no
handler); the guard alone would wait for nothing when it is the one killed.  A
process a plugin started in a new session *with a replaced environment* is found by
neither once the supervisor is gone: run the worker under a service manager that
kills the whole control group (the systemd units in ops/systemd do).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable

from app.worker.procs import PR_SET_PDEATHSIG, carries, prctl, process_table

EXIT_ORPHANED = 70  # the supervisor died before the child could ask to die with it
GUARD_ROUNDS = 10


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` dies; exit now if it already has."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # not Linux: the guard still kills the group
    if os.getppid() != parent:
        os._exit(EXIT_ORPHANED)


def kill_marked(marker: bytes) -> int:
    """SIGKILL every process carrying ``marker`` and the process groups they lead or
    belong to, except this process's own group; rounds until none is left (a process
    forking meanwhile hands the marker on).  Returns how many were found."""
    me, own_group = os.getpid(), os.getpgid(0)
    total = 0
    for _ in range(GUARD_ROUNDS):
        found = [p for p in process_table().values()
                 if p.pid != me and not p.zombie and carries(p.pid, marker)]
        if not found:
            break
        total += len(found)
        for pgid in {p.pgid for p in found} - {own_group}:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in found:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return total


def _guard(lifeline_fd: int, close: Iterable[int], marker: bytes) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    for fd in close:
        os.close(fd)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # never hold the child's output pipe open
        os.dup2(null, fd)
    while os.read(lifeline_fd, 64):
        pass
    kill_marked(marker)


def start_guard(lifeline_fd: int, close: Iterable[int], marker: bytes) -> int:
    """Fork the guard (see the module's text); returns its pid.  Call before any
    thread starts and before any plugin is imported."""
    pid = os.fork()
    if pid == 0:
        try:
            _guard(lifeline_fd, close, marker)
        finally:
            try:
                os.killpg(0, signal.SIGKILL)  # the child's group, the guard with it
            finally:
                os._exit(0)
    return pid
