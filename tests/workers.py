"""Running real `stockq worker` processes in tests, and watching what they do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.logs import read_log_records

ROOT = Path(__file__).resolve().parent.parent
WORKER_PLUGINS = "tests.worker_plugins:PLUGINS"


def worker_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STOCKQ_") and k.lower() not in
           ("http_proxy", "https_proxy", "no_proxy")}
    env.update(
        STOCKQ_REDIS_URL=redis_url,
        STOCKQ_PLUGINS=WORKER_PLUGINS,
        STOCKQ_LOG_FORMAT="json",
        STOCKQ_BUILTIN_PLUGINS="false",
        STOCKQ_DATA_DIR=tempfile.mkdtemp(prefix="stockq-test-"),  # never the user's
        STOCKQ_LEASE_SECONDS="2",
        STOCKQ_RETRY_BASE_SECONDS="0.2",
        STOCKQ_RETRY_MAX_SECONDS="1",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


class WorkerProcess:
    """``python -m app.cli worker`` with its JSON log captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str,
                 command: str = "worker", python: str = sys.executable) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # closed by stop() or kill()
        self.proc = subprocess.Popen(
            [python, "-m", "app.cli", command, *args],
            env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return list(read_log_records(self.log_path, name))

    def wait_started(self, timeout: float = 30) -> None:
        wait_until(lambda: bool(self.events("worker.started")) or self.proc.poll() is not None,
                   timeout, "worker start")
        assert self.proc.poll() is None, self.log_path.read_text()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@contextmanager
def worker_starter(redis_url: str, directory: Path, *default_args: str,
                   **default_env: str) -> Iterator[Callable[..., WorkerProcess]]:
    """``start(*args, command="worker", **env)`` starts a worker (``default_args``
    first, ``env`` over ``default_env``), its log in ``directory``, and waits until it
    runs; every one started is killed when the block ends."""
    started: list[WorkerProcess] = []

    def start(*args: str, command: str = "worker", **env: str) -> WorkerProcess:
        w = WorkerProcess(worker_env(redis_url, **{**default_env, **env}),
                          directory / f"worker{len(started)}.log", *default_args, *args,
                          command=command)
        started.append(w)
        w.wait_started()
        return w

    try:
        yield start
    finally:
        for w in started:
            w.kill()


def wait_status(r: Any, task_id: str, *statuses: str, timeout: float = 30) -> dict[str, str]:
    """The task's hash once its status is one of ``statuses`` (``r``: a synchronous
    redis client with decode_responses)."""
    def ended() -> dict[str, str] | None:
        h: dict[str, str] = r.hgetall(f"stock:task:{task_id}")
        return h if h.get("status") in statuses else None
    return wait_until(ended, timeout, f"task {task_id} to be {'/'.join(statuses)}")  # type: ignore[no-any-return]


def wait_until(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition",
               interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                if "=" in item)


def children_of(pid: int) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                yield int(entry.name)
