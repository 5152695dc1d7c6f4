"""The processes of the chaos run (bench/chaos.py): a redis-server with an append-only
file that can be restarted on its port, and ``stockq worker`` / ``stockq api``
processes with their JSON logs in files."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.environment import PROXY_ENVIRONMENT
from app.local_redis import free_port
from app.logs import read_log_records
from bench._procfs import children_of, pid_alive

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = "bench.chaos_plugins:PLUGINS"


def _answers(port: int) -> bool:
    """PONG (not LOADING) from the server on ``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class AofRedis:
    """``redis-server`` on a free loopback port (never 6379), in a directory of its own,
    with ``appendonly yes``: stopped by a signal and started again on the same port and
    directory, it reloads its append-only file."""

    def __init__(self, directory: Path, appendfsync: str) -> None:
        self.port = free_port()
        self.dir = directory
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait until it answers PING (its AOF loaded); returns that time."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (ops/test.sh installs it)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
             "--protected-mode", "no", "--logfile", str(self.dir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}; see "
                                   f"{self.dir / 'redis.log'}")
            time.sleep(0.005)
        return time.time()

    def stop(self, sig: int = signal.SIGKILL) -> float:
        """Send ``sig``; returns the time it was sent, once the process has exited."""
        assert self.proc is not None
        sent = time.time()
        self.proc.send_signal(sig)
        self.proc.wait(30)
        return sent

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def stockq_env(redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without stockq's settings or a proxy, plus the run's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STOCKQ_") and k not in PROXY_ENVIRONMENT
           and k.lower() != "no_proxy"}
    env.update(STOCKQ_REDIS_URL=redis_url, STOCKQ_PLUGINS=PLUGINS,
               STOCKQ_BUILTIN_PLUGINS="false", STOCKQ_LOG_FORMAT="json",
               STOCKQ_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def _is_fork_server(pid: int) -> bool:
    try:
        return b"app.worker.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class Daemon:
    """``python -m app.cli <command> <args>`` with stdout and stderr in a log file."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # closed when the process is gone
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env,
                                     cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.spawned_at = time.time()
        self.ready = False  # its start event was seen
        self.ended = ""  # how it was ended: killed | stopped

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return list(read_log_records(self.log_path, name))

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def check_ready(self, event: str) -> bool:
        if not self.ready and self.events(event):
            self.ready = True
        return self.ready

    def wait_ready(self, event: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.check_ready(event):
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start within {timeout} s:\n"
                                   f"{self.tail()}")
            time.sleep(0.05)

    def children(self) -> list[int]:
        """The pool's children that run tasks: the supervisor's own children, where
        the fork server (app/worker/forkserver.py) stands for the children it forked."""
        return self._pool(servers=False)

    def pool_processes(self) -> list[int]:
        """The supervisor's children and the fork server's: what must die with it."""
        return self._pool(servers=True)

    def _pool(self, *, servers: bool) -> list[int]:
        if not self.alive:
            return []
        found = []
        for pid in children_of(self.pid):
            if not _is_fork_server(pid):  # (its children are forked: the same command)
                found.append(pid)
                continue
            if servers:
                found.append(pid)
            found.extend(children_of(pid))
        return found

    def kill(self) -> float:
        """SIGKILL; returns the time it was sent."""
        sent = time.time()
        if self.alive:
            self.proc.kill()
        self.proc.wait()
        self.ended = self.ended or "killed"
        self._log.close()
        return sent

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the time it was sent."""
        sent = time.time()
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.ended = self.ended or "stopped"
        self._log.close()
        return sent


def wait_dead(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive, at most ``timeout`` s; the ones still alive."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if pid_alive(p)]
    return alive


def kill_pids(pids: list[int]) -> None:
    """SIGKILL processes this run started (children left behind by a killed worker)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
