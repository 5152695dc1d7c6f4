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


def test_a_worker_run_parses_with_the_worker_parser_alone(tmp_path: Path) -> None:
    """``stockq worker`` builds only the long-running commands' parsers and imports no
    other command's module on its way to the pool (the start-up's critical path);
    what it accepts and refuses is what the whole command line says."""
    import subprocess
    import sys

    from app.cli import build_parser
    from app.local_redis import free_port

    argv = ["worker", "--concurrency", "2", "--queue", "heavy", "--shutdown-grace", "5"]
    assert vars(build_parser(worker_only=True).parse_args(argv)) == \
        vars(build_parser().parse_args(argv))
    for bad in (["worker", "--concurrency", "0"], ["worker", "--bogus"]):
        for worker_only in (True, False):
            with pytest.raises(SystemExit) as exc:
                build_parser(worker_only=worker_only).parse_args(bad)
            assert exc.value.code == 2

    # a real run against a port nothing listens on: exit 3 (Redis unreachable), and
    # by then none of the other commands' modules was imported
    probe = ("import sys\n"
             "from app.entry import main\n"
             "sys.argv = ['stockq', 'worker', '--concurrency', '1']\n"
             "code = main()\n"
             "import json\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith('app.'))))\n"
             "sys.exit(code)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKQ_")}
    env.update(STOCKQ_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
               STOCKQ_PLUGINS=WORKER_PLUGINS, STOCKQ_BUILTIN_PLUGINS="false",
               STOCKQ_DATA_DIR=str(tmp_path), STOCKQ_LOG_LEVEL="warning")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    assert "unreachable" in out.stderr
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert {"app.worker.supervisor", "app.queue", "app.daemon_commands"} <= loaded
    others = {"app.cli_admin", "app.cli_tasks", "app.cli_format", "app.doctor",
              "app.purge", "app.query_command", "app.scheduler.commands"}
    assert not loaded & others, loaded & others
