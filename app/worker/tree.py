"""Killing everything a worker child and its plugins started.

A child runs in a session (and process group) of its own, but a plugin may start a
process in yet another session (``start_new_session=True``, ``setsid``, a daemon's
double fork): a group kill misses it.  So the supervisor kills the child's *tree*,
read from /proc when it kills (never on the hot path):

1. :func:`snapshot` while the child still lives: it and every process below it (the
   child is a subreaper, so nothing its plugins started has left its tree unless
   the child itself died);
2. :func:`terminate`: SIGTERM to the child's group and to every recorded process
   outside it (the grace period follows);
3. :func:`kill_tree`: SIGSTOP, round after round, every live process that was
   recorded, is in the child's group, is below one of those, or is an orphan of this
   pool re-parented to the supervisor (marked by :data:`app.worker.procs.POOL_MARKER`)
   — a stopped process cannot fork, so the rounds end — then SIGKILL them all;
4. :func:`reap`: wait for the ones that became the supervisor's children.

The walks take a few milliseconds (about 2 ms for 100 processes); :func:`reap` sleeps
and runs in a thread.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Collection

from app.worker.procs import Proc, carries, descendants, process_table, read_proc

MAX_ROUNDS = 50


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _send_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def snapshot(root: int) -> dict[int, Proc]:
    """``root`` and every live process below it, by pid."""
    table = process_table()
    if root not in table:
        return {}
    pids = {root} | descendants(table, {root})
    return {pid: table[pid] for pid in pids if not table[pid].zombie}


def terminate(group: int, recorded: dict[int, Proc]) -> None:
    """SIGTERM the process group ``group`` and every recorded process outside it."""
    _send_group(group, signal.SIGTERM)
    for proc in recorded.values():
        if proc.pgid != group:
            _send(proc.pid, signal.SIGTERM)


def _live(table: dict[int, Proc], proc: Proc) -> bool:
    now = table.get(proc.pid)
    return now is not None and now.start == proc.start and not now.zombie


def kill_tree(group: int, recorded: dict[int, Proc], marker: bytes) -> dict[int, Proc]:
    """SIGKILL the child's tree (see the module's text); ``group`` is the child's pid
    and process group.  Returns the processes killed, by pid."""
    me = os.getpid()
    frozen: dict[int, Proc] = {}
    for _ in range(MAX_ROUNDS):
        table = process_table()
        roots = {p.pid for p in recorded.values() if _live(table, p)}
        for proc in table.values():
            if proc.zombie or proc.pid in frozen:
                continue
            if proc.pgid == group or (proc.ppid == me and carries(proc.pid, marker)):
                roots.add(proc.pid)
        found = (roots | descendants(table, roots)) - frozen.keys() - {me}
        fresh = [table[pid] for pid in found if not table[pid].zombie]
        if not fresh:
            break
        for proc in fresh:
            _send(proc.pid, signal.SIGSTOP)
            frozen[proc.pid] = proc
    for pid in frozen:
        _send(pid, signal.SIGKILL)
    _send_group(group, signal.SIGKILL)
    return frozen


def reap_zombies(keep: Collection[int]) -> int:
    """Collect this process's exited children except ``keep`` (the children it started
    itself, whose owners wait for them): orphans re-parented to a subreaper, e.g. a
    plugin's program that had exited without being waited for when its child was
    killed.  Returns how many.  Only for a subreaper whose other children are all in
    ``keep``."""
    me, count = os.getpid(), 0
    for proc in process_table().values():
        if proc.zombie and proc.ppid == me and proc.pid not in keep:
            try:
                os.waitpid(proc.pid, os.WNOHANG)
                count += 1
            except ChildProcessError:
                pass
    return count


def reap(killed: dict[int, Proc], keep: int, timeout: float = 2.0) -> None:
    """Collect the killed processes that became this process's children (orphans
    re-parented to a subreaper), except ``keep`` (the child itself, whose status its
    owner waits for).  Others' zombies are their parents' business."""
    me = os.getpid()
    pending = {pid: p for pid, p in killed.items() if pid != keep}
    deadline = time.monotonic() + timeout
    while pending:
        for pid, proc in list(pending.items()):
            now = read_proc(pid)
            if now is None or now.start != proc.start:
                del pending[pid]  # gone (reaped by its parent), or the pid is reused
            elif now.zombie and now.ppid == me:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                del pending[pid]
            elif now.zombie and now.ppid not in killed:
                del pending[pid]  # a zombie of a living parent (or of PID 1)
        if not pending or time.monotonic() > deadline:
            return
        time.sleep(0.01)
