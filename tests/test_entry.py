"""The console script's early start of a worker's fork server (app/entry.py): which
command lines start one, with what environment, and that the worker takes it over."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import entry
from tests.workers import WORKER_PLUGINS, proc_environ


@pytest.mark.parametrize(("argv", "expected"), [
    (["worker"], (True, None)),
    (["worker", "--concurrency", "2", "--queue", "x"], (True, None)),
    (["--namespace", "demo", "worker"], (True, "demo")),
    (["--namespace=demo", "-v", "worker"], (True, "demo")),
    (["worker", "--help"], (False, None)),
    (["worker", "-h"], (False, None)),
    (["--version", "worker"], (False, None)),
    (["run", "--demo"], (False, None)),
    (["submit", "worker"], (False, None)),
    ([], (False, None)),
])
def test_which_command_lines_run_a_worker(argv: list[str],
                                          expected: tuple[bool, str | None]) -> None:
    assert entry._worker_namespace(argv) == expected


@pytest.fixture
def plugins_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in [k for k in os.environ if k.startswith("STOCKQ_")]:
        monkeypatch.delenv(name)  # the server's settings are these alone
    monkeypatch.setenv("STOCKQ_PLUGINS", WORKER_PLUGINS)
    monkeypatch.setenv("STOCKQ_BUILTIN_PLUGINS", "false")
    monkeypatch.setenv("STOCKQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    yield
    assert entry.take() is None


def test_a_worker_command_line_starts_its_fork_server_first(plugins_env: None) -> None:
    entry.start_early(["--namespace", "early-ns", "worker", "--concurrency", "1"])
    early = entry.take()
    assert early is not None and entry.take() is None  # taken once
    worker_id, (sock_fd, proc, output_fd) = early
    sock = socket.socket(fileno=sock_fd)
    try:
        sock.settimeout(60)
        ready = json.loads(sock.recv(1 << 16) or b"{}")  # the plugins are loaded
        os.set_blocking(output_fd, False)
        try:
            printed = os.read(output_fd, 1 << 16)
        except BlockingIOError:
            printed = b""
        assert ready.get("type") == "ready", (proc.poll(), printed)
        assert ready["fork_safe"] and "quick" in [name for name, _ in ready["plugins"]]
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"app.worker.forkserver" in cmdline and worker_id.encode() in cmdline
        env = proc_environ(proc.pid)
        # the namespace the command line names; no proxy outside a task
        assert env["STOCKQ_NAMESPACE"] == "early-ns" and "HTTP_PROXY" not in env
    finally:
        sock.close()  # the server exits when the supervisor's end is gone
        assert proc.wait(30) == 0
        os.close(output_fd)


def test_no_fork_server_for_other_commands(plugins_env: None) -> None:
    for argv in (["run", "--demo"], ["worker", "--help"], ["--version"]):
        entry.start_early(argv)
        assert entry.take() is None, argv
