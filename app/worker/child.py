"""A worker child: runs one task at a time for its supervisor.

Started by the supervisor as ``python -m app.worker.child FD_IN FD_OUT FD_LIFELINE`` in a
session of its own (so a timeout or cancel kills the child and everything its plugin
started, with one ``killpg``).  It never opens a Redis or ClickHouse connection: tasks
come in on FD_IN, progress and results go out on FD_OUT.

When the supervisor dies — even by SIGKILL — the child kills its whole process group:
the kernel sends it SIGTERM (``PR_SET_PDEATHSIG``), and a thread blocked on the
lifeline pipe (whose write end only the supervisor holds) sees end-of-file; either one
calls ``killpg(0, SIGKILL)``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from typing import Any

PR_SET_PDEATHSIG = 1


def _kill_group(*_: Any) -> None:
    os.killpg(0, signal.SIGKILL)


def _die_with_parent(lifeline_fd: int, parent: int) -> None:
    signal.signal(signal.SIGTERM, _kill_group)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the lifeline thread still works
        pass
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        _kill_group()

    def watch() -> None:
        while os.read(lifeline_fd, 1):
            pass
        _kill_group()

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def _caller(channel: Any) -> Any:
    """``call(message) -> reply`` over the pipe: the supervisor answers each ``call``
    with one ``reply`` while the task runs (the plugin waits for it)."""

    def call(message: dict[str, Any]) -> dict[str, Any]:
        channel.send(message)
        reply = channel.recv()
        if reply is None or reply.get("type") != "reply":
            return {"ok": False, "error_type": "worker_lost",
                    "error": "the supervisor went away during a call"}
        return dict(reply)

    return call


def main(argv: list[str]) -> int:
    fd_in, fd_out, fd_life, parent = (int(a) for a in argv[:4])
    _die_with_parent(fd_life, parent)

    from app.logs import configure_logging
    from app.settings import load_settings
    from app.worker.protocol import BlockingChannel, work_payload
    from plugins_bridge import services
    from plugins_bridge.registry import PluginRegistry
    from plugins_bridge.runner import Outcome, ProxyConfig, run_task

    settings = load_settings()
    configure_logging(settings)
    proxy = ProxyConfig(settings.http_proxy, settings.no_proxy_hosts)
    channel = BlockingChannel(fd_in, fd_out)
    try:
        registry = PluginRegistry.from_settings(settings)
        load_error = ""
    except Exception as exc:  # reported per task, the child stays up
        registry = PluginRegistry()
        load_error = f"plugins failed to load: {exc}"
    services.bind(services.ChildServices(_caller(channel)))
    channel.send({"type": "ready", "pid": os.getpid()})
    while True:
        msg = channel.recv()
        if msg is None or msg["type"] == "stop":
            return 0
        if msg["type"] != "run":
            continue
        task: dict[str, Any] = work_payload(msg["task"])
        if load_error:
            out = Outcome(False, error_type="config_error", error=load_error)
        else:
            out = run_task(registry, task, channel.send, proxy)
        channel.send(out.to_message(str(task["task_id"])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
