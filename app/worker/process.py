"""One worker child as the supervisor sees it: start, talk, kill, stop.

A child's stdout and stderr come to the supervisor on a pipe of their own, masked and
bounded per task by :class:`app.worker.output.OutputCapture`.  Killing a child kills
its whole tree (app/worker/tree.py), read from /proc in a thread.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import os
import sys
import termios
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from app.redaction import Redactor
from app.worker import tree
from app.worker.forks import ForkedProcess, ForkFailed, ForkServer
from app.worker.output import OutputCapture, OutputProtocol
from app.worker.procs import Proc, marker_entry, read_proc
from app.worker.protocol import FrameBuffer, encode

INTERRUPT = "_interrupt"  # messages the supervisor itself puts in a child's inbox
# the pids of the children started here that nobody has waited for yet: never collected
# by app.worker.tree.reap_zombies (asyncio waits for them)
UNREAPED: set[int] = set()


class ChildGone(Exception):
    """The child exited (or could not start)."""


class Inbox:
    """A child's messages, for one reader at a time: an unbounded FIFO like
    ``asyncio.Queue`` (``put_nowait``, ``get``), bound to its loop once instead of
    looking the loop up at every call."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[dict[str, Any] | None] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: dict[str, Any] | None) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> dict[str, Any] | None:
        while not self._items:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items


class _FrameProtocol(asyncio.Protocol):
    """The read end of a child's pipe: frames are cut and decoded as bytes arrive and
    put straight into the inbox (no reader task, no stream buffering)."""

    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox
        self._frames = FrameBuffer()
        self._ended = False

    def data_received(self, data: bytes) -> None:
        if self._ended:
            return
        try:
            for message in self._frames.feed(data):
                self._inbox.put_nowait(message)
        except ValueError:  # a corrupt frame: treat the child as gone
            self._end()

    def eof_received(self) -> bool | None:
        self._end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._inbox.put_nowait(None)


OUTPUT_LINGER = 1.0  # seconds a dead child's output pipe may still deliver


@dataclass(frozen=True, slots=True)
class ChildConfig:
    """What every child of one supervisor shares."""

    env: dict[str, str]
    redactor: Redactor = field(default_factory=Redactor)
    worker_id: str = ""  # marks what the child's plugins start (app.worker.procs)
    output_keep_bytes: int = 16 * 1024
    output_log_bytes: int = 8 * 1024


class ChildProcess:
    """A long-lived child in its own session; messages arrive in :attr:`inbox`."""

    def __init__(self, config: ChildConfig) -> None:
        self._config = config
        self.output = OutputCapture(config.redactor, keep_bytes=config.output_keep_bytes,
                                    log_bytes=config.output_log_bytes)
        self._output: asyncio.ReadTransport | None = None
        self._output_fd = -1
        self._pending = array.array("i", [0])  # FIONREAD's answer
        self.proc: asyncio.subprocess.Process | ForkedProcess | None = None
        self._me: Proc | None = None  # the child as /proc showed it after the start
        self._loop = asyncio.get_running_loop()
        self.inbox = Inbox(self._loop)
        self.tasks_run = 0
        self.ready: dict[str, Any] = {}  # its first message: the plugins it loaded
        self.retire = ""  # why it must be replaced before its next task ('' = it need not)
        self.descendants_killed = 0  # processes below it the last kill signalled
        self._write_fd = -1
        self._lifeline_fd = -1
        self._transport: asyncio.ReadTransport | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    async def start(self, ready_timeout: float = 60.0, *,
                    forks: ForkServer | None = None) -> ChildProcess:
        """Fork the child from ``forks`` (the pool's fork server), or start it as a
        fresh interpreter; returns once it said ``ready``."""
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        r_life, w_life = os.pipe()
        r_print, w_print = os.pipe()  # the child's stdout and stderr
        try:
            if forks is not None:
                self.proc = await forks.fork((r_in, w_out, r_life, w_print))
            else:
                self.proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "app.worker.child",
                    str(r_in), str(w_out), str(r_life), str(os.getpid()),
                    self._config.worker_id,
                    pass_fds=(r_in, w_out, r_life),
                    start_new_session=True,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=w_print, stderr=w_print,
                    env=self._config.env,
                )
                UNREAPED.add(self.proc.pid)
        except BaseException as exc:
            for fd in (w_in, r_out, w_life, r_print):
                os.close(fd)
            if isinstance(exc, ForkFailed):
                raise ChildGone(str(exc)) from None
            raise
        finally:
            for fd in (r_in, w_out, r_life, w_print):
                os.close(fd)
        self._me = read_proc(self.proc.pid)
        self._write_fd, self._lifeline_fd, self._output_fd = w_in, w_life, r_print
        os.set_blocking(w_in, True)
        loop = asyncio.get_running_loop()
        capture = self.output
        self._output, _ = await loop.connect_read_pipe(
            lambda: OutputProtocol(capture), os.fdopen(r_print, "rb", 0))
        self._transport, _ = await loop.connect_read_pipe(
            lambda: _FrameProtocol(self.inbox), os.fdopen(r_out, "rb", 0)
        )
        try:
            first = await asyncio.wait_for(self.inbox.get(), ready_timeout)
        except BaseException:  # cancelled (a spare at shutdown) or no ready in time
            await self.kill()
            raise
        if not first or first.get("type") != "ready":
            await self.kill()
            raise ChildGone("worker child did not start")
        self.ready = first
        return self

    def send(self, message: dict[str, Any]) -> None:
        """Write a frame (task messages are small; the pipe never stays full)."""
        data = memoryview(encode(message))
        try:
            while data:
                data = data[os.write(self._write_fd, data):]
        except OSError as exc:
            raise ChildGone(f"cannot write to the child: {exc}") from None

    def interrupt(self, reason: str) -> None:
        self.inbox.put_nowait({"type": INTERRUPT, "reason": reason})

    def interrupt_later(self, delay: float, reason: str) -> asyncio.TimerHandle:
        """:meth:`interrupt` after ``delay`` seconds (cancel the handle to call it off)."""
        return self._loop.call_later(delay, self.interrupt, reason)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def drain_output(self) -> None:
        """Hand what the output pipe holds to the capture now (a result can arrive
        before the output printed ahead of it: they come on different pipes)."""
        if self._output is None or self._output_fd < 0 or self.output.ended:
            return
        pending = self._pending
        try:
            fcntl.ioctl(self._output_fd, termios.FIONREAD, pending)
            while pending[0] > 0:
                data = os.read(self._output_fd, pending[0])
                if not data:
                    return
                self.output.feed(data)
                pending[0] -= len(data)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # closed meanwhile
            return

    async def kill(self, grace: float = 0.0) -> int | None:
        """Kill the child's tree (app/worker/tree.py): with ``grace``, SIGTERM to its
        group and to every process below it first, and up to ``grace`` seconds to go;
        then SIGKILL to all that is left.  Returns the child's exit code."""
        if self.proc is None:
            return None
        # the walks read /proc right here: a few ms, less than a hop to a thread costs
        # on a busy machine; only the reaping (which sleeps) goes to a thread
        recorded = {self._me.pid: self._me} if self._me is not None else {}
        if grace > 0 and self.alive:
            recorded.update(tree.snapshot(self.proc.pid))
            tree.terminate(self.proc.pid, recorded)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                pass
        killed = tree.kill_tree(self.proc.pid, recorded, marker_entry(self._config.worker_id))
        code = await self.proc.wait()
        UNREAPED.discard(self.proc.pid)
        # below the child: every process signalled (some went with the SIGTERM)
        self.descendants_killed = len((recorded.keys() | killed.keys()) - {self.proc.pid})
        if self.descendants_killed:  # collect the ones re-parented to us, in the background
            self._loop.run_in_executor(None, tree.reap, {**recorded, **killed}, self.proc.pid)
        self._close()
        return code

    async def stop(self, timeout: float = 5.0) -> None:
        """Ask an idle child to exit; kill it (and what it left) in any case."""
        if self.alive:
            try:
                self.send({"type": "stop"})
                await asyncio.wait_for(self.proc.wait(), timeout)  # type: ignore[union-attr]
            except (ChildGone, TimeoutError):
                pass
        await self.kill()

    def _close(self) -> None:
        for fd in (self._write_fd, self._lifeline_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._write_fd = self._lifeline_fd = -1
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._output is not None:
            # what the child wrote last may still be in the pipe: let it arrive (the pipe
            # ends when the child's tree is gone); close it later in any case
            if not self._output.is_closing():
                self._loop.call_later(OUTPUT_LINGER, self._output.close)
            self._output = None
            self._output_fd = -1
