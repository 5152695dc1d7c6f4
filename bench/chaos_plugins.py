"""The plugins of the chaos run (bench/chaos.py), one per kind of task.

Registered with ``STOCKQ_PLUGINS=bench.chaos_plugins:PLUGINS`` (PYTHONPATH must hold
the repository root).  Every run leaves marks in files of the directory named by the
``marks`` param, outside the queue's Redis (a restart of that Redis must not lose
them), one file per worker child (``<pid>.marks``, one ``write`` per line, appended)::

    S task_id attempt pid start_ns                  the run started
    E task_id attempt pid start_ns end_ns outcome   it ended (ok, or the exception)
    C task_id attempt pid start_ns holder_pid       it started while another process
                                                    held the task's lock

A killed run has an S mark and no E mark.  While it runs a task holds an exclusive
``flock`` on ``<marks>/locks/<task_id>``; the kernel releases it when the run ends or its
process dies, so a C mark means two processes ran the task at the same moment.

The kinds (each must end as said; bench/_chaos_analysis.py EXPECTED):

- quick (``chaos_quick``): sleeps ``seconds`` (a few ms); completed.
- slow (``chaos_slow``): sleeps ``seconds`` (about a second); completed.
- flaky (``chaos_flaky``): raises ConnectionError (``network``, retried) on attempts up
  to ``fail_times``, then succeeds; completed.
- timeout (``chaos_timeout``): sleeps 60 s past its 1 s timeout; failed (``timeout``,
  or ``worker_lost`` when a kill took its last attempt) after its 2 attempts.

The others may use up to 10 attempts (kills take some).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

from plugins_bridge.contract import Plugin, success
from plugins_bridge.progress import current_task


def mark(marks: str, line: str) -> None:
    """Append one line to this process's marks file (one write: never interleaved)."""
    fd = os.open(f"{marks}/{os.getpid()}.marks", os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class Marked(Plugin):
    """Marks each run and holds the task's lock while it runs; subclasses do the work."""

    default_timeout_seconds = 30
    default_max_attempts = 10

    def run(self, **params: Any) -> dict[str, Any]:
        task = current_task()
        if task is None:  # called outside a worker: nothing to mark
            return self.work(1, params)
        marks, pid = str(params["marks"]), os.getpid()
        head = f"{task.task_id} {task.attempt} {pid}"
        lock_path = Path(marks) / "locks" / task.task_id
        start = time.time_ns()
        with open(lock_path, "a+", encoding="ascii") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock.seek(0)
                lock.truncate()
                lock.write(str(pid))
                lock.flush()
                held = ""
            except BlockingIOError:
                lock.seek(0)
                held = lock.read().strip() or "?"
            mark(marks, f"S {head} {start}")
            if held:
                mark(marks, f"C {head} {start} {held}")
            outcome = "ok"
            try:
                return self.work(task.attempt, params)
            except BaseException as exc:
                outcome = type(exc).__name__
                raise
            finally:  # before the lock is released
                mark(marks, f"E {head} {start} {time.time_ns()} {outcome}")

    def work(self, attempt: int, params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class Sleep(Marked):
    def work(self, attempt: int, params: dict[str, Any]) -> dict[str, Any]:
        time.sleep(float(params.get("seconds", 0)))
        return success(1)


class Quick(Sleep):
    name = "chaos_quick"
    description = "chaos run: sleeps a few milliseconds"


class Slow(Sleep):
    name = "chaos_slow"
    description = "chaos run: sleeps about a second (kills land inside it)"


class Flaky(Marked):
    name = "chaos_flaky"
    description = "chaos run: a network error on its first attempts, then success"

    def work(self, attempt: int, params: dict[str, Any]) -> dict[str, Any]:
        if attempt <= int(params.get("fail_times", 2)):
            raise ConnectionError(f"connection refused (attempt {attempt})")
        time.sleep(float(params.get("seconds", 0)))
        return success(1)


class TimingOut(Sleep):
    name = "chaos_timeout"
    description = "chaos run: outlives its timeout on every attempt"
    default_timeout_seconds = 1
    default_max_attempts = 2

    def work(self, attempt: int, params: dict[str, Any]) -> dict[str, Any]:
        time.sleep(60)
        return success(1)


KINDS = {"quick": Quick(), "slow": Slow(), "flaky": Flaky(), "timeout": TimingOut()}
PLUGINS = list(KINDS.values())
