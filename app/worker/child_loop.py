"""A worker child's task loop (after the first steps in app/worker/child.py): load the
plugins once, then run one task at a time under its memory limit, flush what it
printed, send the result, collect exited children."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from app.logs import configure_logging
from app.settings import Settings, load_settings
from app.worker.memory import limit_mb, memory_limit
from app.worker.procs import exited_children
from app.worker.protocol import BlockingChannel, work_payload
from plugins_bridge import services
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.runner import Outcome, ProxyConfig, run_task


def _reap_children() -> None:
    """Collect exited children (the plugin's, and orphans re-parented to this
    subreaper) so none stays a zombie; one system call when there is none."""
    for _ in exited_children():
        pass


def _flush_output() -> None:
    """What the plugin printed reaches the output pipe before its result is sent."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed or replaced by a plugin
            pass


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


@dataclass(slots=True)
class Loaded:
    """What a child needs before its first task: the settings, the plugins (loaded
    once: in the child, or in the fork server before the children are forked from it)
    and the ``ready`` message that names them (app/worker/capabilities.py)."""

    settings: Settings
    proxy: ProxyConfig
    registry: PluginRegistry
    load_error: str
    ready: dict[str, Any]


def load() -> Loaded:
    """Read the settings, configure logging and load the plugins."""
    settings = load_settings()
    configure_logging(settings)
    proxy = ProxyConfig(settings.http_proxy, settings.no_proxy_hosts)
    try:
        registry = PluginRegistry.from_settings(settings)
        load_error = ""
    except Exception as exc:  # reported per task, the child stays up
        registry = PluginRegistry()
        load_error = f"plugins failed to load: {exc}"
    ready = {"type": "ready", "pid": os.getpid(), "load_error": load_error,
             "plugins": [[name, list(getattr(registry.get(name), "requires", ()) or ())]
                         for name in registry.names()],
             "unavailable": registry.unavailable}
    return Loaded(settings, proxy, registry, load_error, ready)


def serve(fd_in: int, fd_out: int, loaded: Loaded | None = None) -> int:
    """Say ``ready`` (with what was loaded and what each plugin requires), then run
    each task that comes until ``stop`` or the end of the pipe.  Loads the plugins
    first unless ``loaded`` (a child forked from the fork server) has them."""
    loaded = loaded or load()
    settings, proxy, registry, load_error = (loaded.settings, loaded.proxy, loaded.registry,
                                             loaded.load_error)
    channel = BlockingChannel(fd_in, fd_out)
    services.bind(services.ChildServices(_caller(channel)))
    channel.send({**loaded.ready, "pid": os.getpid()})
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
            name = task["plugin_name"]
            limit = limit_mb(task, registry.get(name) if name in registry else None,
                             settings.memory_limit_mb)
            if limit:
                with memory_limit(limit):
                    out = run_task(registry, task, channel.send, proxy)
                if out.error_type == "memory_exceeded":
                    out.error = f"{out.error} (memory limit {limit} MB)"
            else:  # no context manager on the hot path
                out = run_task(registry, task, channel.send, proxy)
        _flush_output()
        channel.send(out.to_message(str(task["task_id"])))
        _reap_children()
