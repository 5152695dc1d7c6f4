"""Plugins the worker tests run in real child processes.

Registered with ``STOCKQ_PLUGINS=tests.worker_plugins:PLUGINS``.  They leave evidence
in files named by their params (pids, environment, counters), since a child shares no
memory with the test.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from plugins_bridge.contract import Plugin, failure, success
from plugins_bridge.progress import current_task, report_progress


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


class Sleeper(Plugin):
    """Sleeps ``seconds``; with ``pidfile`` records its pid and the pid of a ``sleep``
    subprocess it starts (which must die with it); ``first_only`` sleeps on attempt 1
    only."""

    name = "sleeper"

    def run(self, **params: Any) -> dict[str, Any]:
        task = current_task()
        if params.get("first_only") and task is not None and task.attempt > 1:
            return success(1)
        if params.get("pidfile"):
            proc = subprocess.Popen(["sleep", "300"])
            Path(params["pidfile"]).write_text(json.dumps({"child": os.getpid(),
                                                           "sleep": proc.pid}))
        time.sleep(float(params.get("seconds", 1)))
        return success(1)


class Flaky(Plugin):
    """Fails with a connection error until it has been called ``fail_times`` times."""

    name = "flaky"

    def run(self, **params: Any) -> dict[str, Any]:
        counter = Path(params["counter"])
        count = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(count))
        if count <= int(params.get("fail_times", 2)):
            raise ConnectionError(f"connection refused (call {count})")
        return success(count)


class EnvDump(Plugin):
    """Writes the proxy variables it sees to ``out``."""

    name = "envdump"

    def run(self, **params: Any) -> dict[str, Any]:
        names = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY",
                 "no_proxy")
        Path(params["out"]).write_text(json.dumps({n: os.environ.get(n) for n in names}))
        return success(0)


class Stepper(Plugin):
    """Reports progress over ``steps`` steps of ``delay`` seconds."""

    name = "stepper"

    def run(self, **params: Any) -> dict[str, Any]:
        steps = int(params.get("steps", 5))
        for i in range(1, steps + 1):
            time.sleep(float(params.get("delay", 0.1)))
            report_progress(100 * i / steps, records=i * 10, message=f"step {i}")
        return success(steps * 10)


class Dates(Plugin):
    """One run per trade date; fails at ``fail_on`` the first ``fail_times`` times."""

    name = "dates"

    def run(self, **params: Any) -> dict[str, Any]:
        date = params["trade_date"]
        _append(params["log"], date)
        task = current_task()
        if date == params.get("fail_on"):
            marker = Path(params["log"] + ".failed")
            if not marker.exists():
                marker.write_text("1")
                return failure("connection reset by peer")
        return success(5, attempt=task.attempt if task else 0)


class Crasher(Plugin):
    """Exits abruptly (as a segfault or an OOM kill would)."""

    name = "crasher"

    def run(self, **params: Any) -> dict[str, Any]:
        os._exit(int(params.get("code", 3)))


class BadParams(Plugin):
    name = "badparams"

    def run(self, **params: Any) -> dict[str, Any]:
        raise ValueError("ts_code must look like 000001.SZ")


class Quick(Plugin):
    """Succeeds after ``seconds``.  With ``log`` it appends ``task_id pid start|end time``
    lines, and holds an exclusive lock on ``<log>.<task_id>.lock`` while it runs: a
    second process running the same task at the same time logs ``conflict``."""

    name = "quick"

    def run(self, **params: Any) -> dict[str, Any]:
        task = current_task()
        lock = None
        if params.get("log") and task is not None:
            lock = open(f"{params['log']}.{task.task_id}.lock", "a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _append(params["log"], f"{task.task_id} {os.getpid()} conflict 0")
            _append(params["log"], f"{task.task_id} {os.getpid()} start {time.time():.6f}")
        time.sleep(float(params.get("seconds", 0)))
        if params.get("log") and task is not None:
            _append(params["log"], f"{task.task_id} {os.getpid()} end {time.time():.6f}")
        if lock is not None:
            lock.close()  # a killed run releases it when its process dies
        return success(1)


def leaked_text() -> str:
    """Text holding every secret this child can see: the TuShare and API tokens, the
    proxy URL (as ``proxy_context`` sets it while a plugin runs), the proxy password
    decoded, the ClickHouse password, and someone else's URL with a password."""
    from urllib.parse import unquote, urlsplit

    proxy = os.environ.get("HTTPS_PROXY", "")
    clickhouse = os.environ.get("STOCKQ_CLICKHOUSE_URL", "")
    return (f"TuShare refused token {os.environ.get('STOCKQ_TUSHARE_TOKEN', '')} "
            f"(Authorization: Bearer {os.environ.get('STOCKQ_API_TOKEN', '')}) "
            f"via {proxy} password={unquote(urlsplit(proxy).password or '')}; "
            f"ClickHouse pw {urlsplit(clickhouse).password or ''}; "
            "mirror https://alice:opensesame@db.example/x")


class Leaky(Plugin):
    """A plugin whose texts hold the stored secrets (:func:`leaked_text`), by ``mode``:
    ``raise`` (RuntimeError, retried), ``config`` (ConfigurationError), ``return`` (a
    failed result), ``dates`` (fails on the second trade date), ``ok`` (progress
    message, checkpoint, result steps and message), ``print`` (stdout, stderr, a
    subprocess, stockq's logger, the logging module, a traceback)."""

    name = "leaky"

    def run(self, **params: Any) -> dict[str, Any]:
        text = leaked_text()
        mode = params.get("mode")
        if mode == "raise":
            raise RuntimeError(text)
        if mode == "config":
            from plugins_bridge.errors import ConfigurationError

            raise ConfigurationError(text)
        if mode == "return":
            return failure(text, steps={"fetch": {"error": text}})
        if mode == "dates":
            if params["trade_date"] != min(current_task().trade_dates):  # type: ignore[union-attr]
                raise RuntimeError(text)
            return success(1)
        if mode == "ok":
            # the token straddles the 500th character, where a stored message is cut
            report_progress(50, records=1, message="x" * 468 + text, checkpoint=text)
            time.sleep(0.6)  # the supervisor writes progress every 0.25 s
            return {"status": "success", "message": text,
                    "steps": {"load": {"total_records": 1}, "fetch": {"error": text}}}
        if mode == "print":
            import logging
            import sys
            import traceback

            from app.logs import get_logger

            print(text, flush=True)
            print(text, file=sys.stderr, flush=True)
            os.write(1, (text + "\n").encode())
            subprocess.run(["echo", text], check=True)
            get_logger("plugin.leaky").warning("plugin.note", detail=text, items=[text])
            logging.getLogger("plugin.leaky").error("stdlib: %s", text)
            try:
                raise RuntimeError(text)
            except RuntimeError:
                traceback.print_exc()
            return success(1)
        raise ValueError(f"unknown mode {mode!r}")


class GilHog(Plugin):
    """Attempt 1 ignores SIGTERM, then sleeps ``seconds`` inside libc's ``sleep`` called
    through ``ctypes.PyDLL``, which keeps the GIL: no Python signal handler and no other
    thread of the child runs meanwhile.  Every attempt holds an exclusive lock on
    ``<log>.lock`` while it runs and appends ``pid start|end|conflict time attempt``
    lines to ``log`` (``conflict``: another run of the task holds the lock)."""

    name = "gilhog"

    def run(self, **params: Any) -> dict[str, Any]:
        task = current_task()
        attempt = task.attempt if task is not None else 0
        log = params["log"]
        lock = open(f"{log}.lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _append(log, f"{os.getpid()} conflict {time.time():.6f} {attempt}")
        _append(log, f"{os.getpid()} start {time.time():.6f} {attempt}")
        if attempt == 1:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            ctypes.PyDLL(None).sleep(int(params.get("seconds", 60)))
        _append(log, f"{os.getpid()} end {time.time():.6f} {attempt}")
        lock.close()
        return success(1)


_UNWAITED: list[subprocess.Popen[bytes]] = []


class Detacher(Plugin):
    """Starts programs that leave the child's process group, writes their pids (and the
    child's) to ``pidfile``, then sleeps ``seconds``: ``session``, a ``sleep`` in a
    session of its own; ``daemon``, ``setsid sleep`` started in the background by a shell
    that exits at once (its parent is gone); with ``clean_env``, ``clean_env``, one in a
    new session with a replaced environment; ``exited``, a program that exits at once
    and is never waited for.  ``stubborn`` ignores SIGTERM; ``crash`` exits at once
    after starting them."""

    name = "detacher"

    def run(self, **params: Any) -> dict[str, Any]:
        path = Path(params["pidfile"])
        kids = {"child": os.getpid(),
                "session": subprocess.Popen(["sleep", "300"], start_new_session=True).pid}
        if params.get("clean_env"):
            kids["clean_env"] = subprocess.Popen(
                ["sleep", "300"], start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}).pid
        daemon = path.with_suffix(".daemon")
        subprocess.run(["sh", "-c", f"setsid sleep 300 >/dev/null 2>&1 & echo $! > {daemon}"],
                       check=True)
        kids["daemon"] = int(daemon.read_text())
        exited = subprocess.Popen(["true"])  # never waited for: a zombie of the child
        _UNWAITED.append(exited)
        kids["exited"] = exited.pid
        path.write_text(json.dumps(kids))
        if params.get("crash"):
            os._exit(3)
        if params.get("stubborn"):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(float(params.get("seconds", 60)))
        return success(1)


class Chatty(Plugin):
    """Prints :func:`leaked_text` on stdout, then ``mb`` MB in lines of 100 characters
    (half on stderr), then :func:`leaked_text` again and ``last line``."""

    name = "chatty"

    def run(self, **params: Any) -> dict[str, Any]:
        text = leaked_text()
        print(text, flush=True)
        block = ("y" * 99 + "\n") * 10_000  # 1,000,000 bytes
        for i in range(int(params.get("mb", 1))):
            (sys.stdout if i % 2 == 0 else sys.stderr).write(block)
        print(text)
        print("last line")
        return success(1)


class Hog(Plugin):
    """Allocates ``step_mb`` MB at a time and keeps it, up to ``max_mb`` (zero-filled
    memory the kernel hands out untouched: without a limit it costs address space, not
    RAM), then succeeds."""

    name = "hog"

    def run(self, **params: Any) -> dict[str, Any]:
        step = int(params.get("step_mb", 50))
        kept = [bytes(step * 1024 * 1024) for _ in range(int(params["max_mb"]) // step)]
        return success(len(kept))


class LimitedHog(Hog):
    """:class:`Hog` with a memory limit of its own."""

    name = "hog_limited"
    memory_limit_mb = 200


PLUGINS = [Sleeper(), Flaky(), EnvDump(), Stepper(), Dates(), Crasher(), BadParams(), Quick(),
           Leaky(), GilHog(), Detacher(), Chatty(), Hog(), LimitedHog()]
