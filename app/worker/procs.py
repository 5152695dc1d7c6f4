"""Processes as Linux's /proc shows them, and the process controls of a worker pool.

Imported by a worker child before anything else (and by its guard), so it needs only
the standard library.  Nothing here walks /proc on a task's hot path: the supervisor
reads the process table when it kills a child's tree (timeout, cancel, crash, stop),
a guard when its supervisor has died.

- :func:`prctl` sets the parent-death signal of a child and makes the supervisor and
  each child a *child subreaper*: when a process a plugin started loses its parent, it
  is re-parented to the nearest subreaper above it (the child while it lives, else the
  supervisor) instead of PID 1, so it stays in the tree that is walked at kill time.
- :data:`POOL_MARKER` is an environment variable a child sets for whatever its plugins
  start (``<name>=<worker id>``); /proc shows it for every process started with an
  inherited environment, also after it left the child's session and lost its parent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
POOL_MARKER = "STOCKQ_WORKER_POOL"


def prctl(option: int, value: int) -> bool:
    """``prctl(option, value)``; False where there is none (not Linux) or it failed."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


_subreaper = False


def become_subreaper() -> bool:
    """Make this process a child subreaper (Linux ≥ 3.4): orphans of the processes
    below it come to it instead of PID 1, and it must collect them when they exit.
    Returns whether that worked."""
    global _subreaper
    _subreaper = prctl(PR_SET_CHILD_SUBREAPER, 1)
    return _subreaper


def is_subreaper() -> bool:
    """Whether :func:`become_subreaper` made this process one."""
    return _subreaper


def exited_children() -> Iterator[tuple[int, int]]:
    """Collect this process's exited children without waiting: (pid, exit code) of
    each, until none is left to collect (one system call when there is none)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)


def new_worker_id() -> str:
    """A pool's id: ``host:pid:random`` (the host as ``socket.gethostname()`` says)."""
    return f"{os.uname().nodename}:{os.getpid()}:{os.urandom(3).hex()}"


def marker_entry(worker_id: str) -> bytes:
    """The environment entry that marks the processes of one pool's tasks."""
    return f"{POOL_MARKER}={worker_id}".encode()


class Proc:
    """One line of /proc/PID/stat, the fields a tree walk needs.  (A plain class: a
    dataclass would import ``inspect`` into every child before its guard forks.)"""

    __slots__ = ("pid", "ppid", "pgid", "start", "zombie")

    def __init__(self, pid: int, ppid: int, pgid: int, start: int, zombie: bool) -> None:
        self.pid = pid
        self.ppid = ppid
        self.pgid = pgid
        self.start = start  # clock ticks after boot: with the pid, it names one process
        self.zombie = zombie

    def __repr__(self) -> str:
        return (f"Proc(pid={self.pid}, ppid={self.ppid}, pgid={self.pgid}, "
                f"start={self.start}, zombie={self.zombie})")


def read_proc(pid: int) -> Proc | None:
    """The process ``pid`` now, or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its end
    rest = data[data.rindex(b")") + 2:].split()
    return Proc(pid, int(rest[1]), int(rest[2]), int(rest[19]), rest[0] in (b"Z", b"X"))


def process_table() -> dict[int, Proc]:
    """Every process this one can see (a few milliseconds for a few hundred)."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            proc = read_proc(int(name))
            if proc is not None:
                table[proc.pid] = proc
    return table


def descendants(table: dict[int, Proc], roots: Iterable[int]) -> set[int]:
    """The pids below ``roots`` in ``table`` (children, recursively, by parent pid)."""
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    start = set(roots)
    found: set[int] = set()
    stack = list(start)
    while stack:
        for pid in children.get(stack.pop(), ()):
            if pid not in found and pid not in start:
                found.add(pid)
                stack.append(pid)
    return found


def carries(pid: int, entry: bytes) -> bool:
    """Whether ``pid`` was started with the environment entry ``entry`` (False for a
    zombie or a process of another user)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return entry in fh.read().split(b"\0")
    except OSError:
        return False
