"""The supervisor's end of the fork server (app/worker/forkserver.py).

:meth:`ForkServer.launch` starts the server (synchronously, so ``stockq worker`` can
start it before it imports the rest of the supervisor: both start at once);
:meth:`ForkServer.attach` waits for its ``ready``; :meth:`ForkServer.fork` hands it a
child's pipe ends and returns the child as a :class:`ForkedProcess` (pid, exit code,
``wait()``, like the ``asyncio.subprocess.Process`` of a spawned child).  What the
server prints goes through an output capture like a child's.  When the server dies,
its children die with it (their parent-death signal): they are reported killed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
from typing import Any

from app.worker.forkserver import MAX_RECORD
from app.worker.forkserver_launch import ServerProcess, launch


class ForkFailed(Exception):
    """The fork server could not fork a child (or is gone)."""


class ForkedProcess:
    """A child of the fork server: its pid and, once it ended, its exit code."""

    def __init__(self, pid: int, loop: asyncio.AbstractEventLoop) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._done: asyncio.Future[int] = loop.create_future()

    def exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            if not self._done.done():
                self._done.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._done)


class ForkServer:
    """One fork server of a pool (see the module's text)."""

    def __init__(self, sock_fd: int, proc: ServerProcess, output_fd: int) -> None:
        self._sock = socket.socket(fileno=sock_fd)
        self.proc = proc
        self.output_fd = output_fd  # its stdout and stderr, for an output capture
        self.ready: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._ids = itertools.count(1)
        self._forks: dict[int, asyncio.Future[int]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}
        self.alive = True

    @classmethod
    def launch(cls, env: dict[str, str], worker_id: str) -> ForkServer:
        """Start the server (it loads the plugins meanwhile; :meth:`attach` waits)."""
        return cls(*launch(env, worker_id))

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def attach(self, timeout: float = 60.0) -> dict[str, Any]:
        """Listen to the server on this loop; its ``ready`` message (the plugins)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._ready = loop.create_future()
        self._sock.setblocking(False)
        loop.add_reader(self._sock.fileno(), self._readable)
        try:
            self.ready = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except BaseException:
            self.close()
            raise
        return self.ready

    def _readable(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._sock, MAX_RECORD, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._lost()
                return
            for fd in fds:
                os.close(fd)
            if not data:
                self._lost()
                return
            self._dispatch(json.loads(data))

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(msg)
        elif kind in ("forked", "fork_failed"):
            fut = self._forks.pop(int(msg.get("id") or 0), None)
            if fut is not None and not fut.done():
                if kind == "forked":
                    fut.set_result(int(msg["pid"]))
                else:
                    fut.set_exception(ForkFailed(str(msg.get("error"))))
        elif kind == "exit":
            pid, code = int(msg["pid"]), int(msg["code"])
            child = self._children.pop(pid, None)
            if child is not None:
                child.exited(code)
            else:  # reported before its fork's answer was read
                self._early_exits[pid] = code

    def _lost(self) -> None:
        """The server is gone: so are its children (their parent-death signal)."""
        if not self.alive:
            return
        self.alive = False
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        gone = ForkFailed("the fork server exited")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(gone)
        for fut in self._forks.values():
            if not fut.done():
                fut.set_exception(gone)
        self._forks.clear()
        for child in self._children.values():
            child.exited(-signal.SIGKILL)
        self._children.clear()

    async def fork(self, fds: tuple[int, int, int, int], timeout: float = 30.0
                   ) -> ForkedProcess:
        """Fork a child with these pipe ends (input read end, output write end,
        lifeline read end, stdout/stderr write end); the caller closes its own."""
        if not self.alive or self._loop is None:
            raise ForkFailed("the fork server is not running")
        request_id = next(self._ids)
        fut: asyncio.Future[int] = self._loop.create_future()
        self._forks[request_id] = fut
        try:
            socket.send_fds(self._sock, [json.dumps({"type": "fork", "id": request_id})
                                         .encode()], list(fds))
        except OSError as exc:
            self._forks.pop(request_id, None)
            raise ForkFailed(f"cannot reach the fork server: {exc}") from None
        pid = await asyncio.wait_for(fut, timeout)
        child = ForkedProcess(pid, self._loop)
        if pid in self._early_exits:
            child.exited(self._early_exits.pop(pid))
        else:
            self._children[pid] = child
        return child

    def close(self) -> None:
        """Close the socket: the server exits (its children die with it)."""
        if self._loop is not None and self.alive:
            self._loop.remove_reader(self._sock.fileno())
        self.alive = False
        self._sock.close()

    async def stop(self, timeout: float = 5.0) -> None:
        """Close and wait for the server (SIGKILL after ``timeout``)."""
        self.close()
        try:
            await asyncio.to_thread(self.proc.wait, timeout)
        except TimeoutError:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
