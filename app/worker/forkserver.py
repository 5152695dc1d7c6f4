"""The fork server: where a pool's children come from.

Started by the supervisor (app/worker/forkserver_launch.py) as ``python -m
app.worker.forkserver SOCKET_FD SUPERVISOR_PID WORKER_ID`` (a fresh interpreter in a
session of its own, with the children's environment), it asks to be SIGKILLed when the
supervisor dies, then imports what a child runs and loads the plugins — once for the
whole pool — and says ``ready`` (the plugins, as a child's ``ready`` does). From then
on each request of the supervisor (``fork``, with the child's four pipe ends passed as
file descriptors) forks a child, which takes the steps of a spawned one
(app/worker/child.py: its own session, death with its parent, the guard, subreaper,
the pool's mark) and serves tasks with the plugins already loaded. A fork takes a few
milliseconds instead of an interpreter's start and the imports (a few hundred on a
small machine); the supervisor learns each child's pid, and its exit status when it
ends.

It runs no plugin code but the plugins' imports and holds no thread (it checks: a
plugin that starts one at import makes it say ``fork_safe: false``, and the supervisor
starts its children as fresh interpreters instead), no Redis or ClickHouse connection
and no pipe of a child once that child is forked.  A child's parent is the fork server;
it is SIGKILLed when the fork server dies, which dies with the supervisor.

Messages on the socket (``SOCK_SEQPACKET``, one JSON object per record):
supervisor → server ``{"type": "fork", "id": N}`` with the file descriptors (child's
input read end, output write end, lifeline read end, stdout/stderr write end);
server → supervisor ``ready``, ``{"type": "forked", "id": N, "pid": P}``,
``{"type": "fork_failed", "id": N, "error": ...}`` and ``{"type": "exit", "pid": P,
"code": C}`` (C as ``Popen.returncode``: negative for a signal).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys

from app.worker.lifeline import die_with_parent
from app.worker.procs import exited_children

MAX_RECORD = 1 << 16
# Imported once the server has been idle this long after its first fork, so that children
# forked later have them: ``requests`` (the TuShare clients import it at their first
# call).  None of them starts a thread.
DEFERRED_IMPORTS = ("requests",)
IDLE_BEFORE_DEFERRED = 0.2


def _import_deferred(names: list[str]) -> None:
    """Import what plugins use but the first children need not wait for (a child
    forked before imports it at its first use)."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _send(sock: socket.socket, message: dict[str, object]) -> None:
    sock.sendall(json.dumps(message).encode())


def _child(sock: socket.socket, wake: tuple[int, int], fds: list[int], worker_id: str,
           loaded: object) -> None:
    """In the forked child: detach from the server, then a child's steps and its loop.
    Never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        for fd in wake:
            os.close(fd)
        os.setsid()
        fd_in, fd_out, fd_life, fd_print = fds
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd_print, 1)
        os.dup2(fd_print, 2)
        os.close(null)
        os.close(fd_print)
        from app.worker.child import start_child
        from app.worker.child_loop import Loaded, serve

        start_child(fd_in, fd_out, fd_life, os.getppid(), worker_id)
        assert isinstance(loaded, Loaded)
        code = serve(fd_in, fd_out, loaded)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(code)


def _reap(sock: socket.socket) -> None:
    for pid, code in exited_children():
        _send(sock, {"type": "exit", "pid": pid, "code": code})


def _fork(sock: socket.socket, wake: tuple[int, int], request: dict[str, object],
          fds: list[int], worker_id: str, loaded: object) -> None:
    for stream in (sys.stdout, sys.stderr):  # nothing buffered is printed twice
        stream.flush()
    try:
        if len(fds) != 4:
            raise OSError(f"a fork needs 4 file descriptors, got {len(fds)}")
        pid = os.fork()
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        _send(sock, {"type": "fork_failed", "id": request.get("id"), "error": str(exc)})
        return
    if pid == 0:
        _child(sock, wake, fds, worker_id, loaded)
    for fd in fds:
        os.close(fd)
    _send(sock, {"type": "forked", "id": request.get("id"), "pid": pid})


def serve(sock: socket.socket, worker_id: str) -> int:
    import threading

    from app.worker.child_loop import load

    loaded = load()
    fork_safe = threading.active_count() == 1
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    _send(sock, {**loaded.ready, "fork_safe": fork_safe})
    sock_fd = sock.fileno()
    deferred, forked = list(DEFERRED_IMPORTS), 0
    while True:
        readable, _, _ = select.select([sock_fd, wake_r], [], [],
                                       IDLE_BEFORE_DEFERRED if deferred and forked else None)
        if not readable and deferred:  # the first children are forked: now the rest
            _import_deferred(deferred)
            deferred = []
            continue
        if wake_r in readable:
            os.read(wake_r, 512)
        _reap(sock)
        if sock_fd not in readable:
            continue
        data, fds, _, _ = socket.recv_fds(sock, MAX_RECORD, 8)
        if not data:
            return 0  # the supervisor closed the socket
        request = json.loads(data)
        if request.get("type") == "fork" and fork_safe:
            _fork(sock, (wake_r, wake_w), request, fds, worker_id, loaded)
            forked += 1
        else:  # (the supervisor does not ask an unsafe server; never leave it waiting)
            for fd in fds:
                os.close(fd)
            _send(sock, {"type": "fork_failed", "id": request.get("id"),
                         "error": "not forking: a thread runs in the fork server"})


def main(argv: list[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    worker_id = argv[2] if len(argv) > 2 else str(parent)
    die_with_parent(parent)
    sock = socket.socket(fileno=fd)
    try:
        return serve(sock, worker_id)
    except (BrokenPipeError, ConnectionResetError):
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
