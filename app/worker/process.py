"""One worker child as the supervisor sees it: start, talk, kill, stop.

A child's stdout and stderr (whatever its plugins print, a crash's traceback, the
output of the programs they start) come to the supervisor on a pipe of their own and
are written to the supervisor's stderr line by line after the redactor masked the
stored secrets in them: a child may run any code, so its output is not trusted to be
clean.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
import sys
from collections import deque
from typing import Any

from app.logs import write_output
from app.redaction import Redactor, StreamRedactor
from app.worker.protocol import FrameBuffer, encode

INTERRUPT = "_interrupt"  # messages the supervisor itself puts in a child's inbox


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


class _OutputProtocol(asyncio.Protocol):
    """The read end of a child's stdout and stderr: redacted, then on to stderr."""

    def __init__(self, redactor: Redactor) -> None:
        self._stream = StreamRedactor(redactor)
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.ended = False

    def data_received(self, data: bytes) -> None:
        write_output(self._stream.feed(self._decoder.decode(data)))

    def eof_received(self) -> bool | None:
        self._end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            write_output(self._stream.feed(self._decoder.decode(b"", final=True))
                         + self._stream.close())


OUTPUT_LINGER = 1.0  # seconds a dead child's output pipe may still deliver


class ChildProcess:
    """A long-lived child in its own session; messages arrive in :attr:`inbox`."""

    def __init__(self, env: dict[str, str], redactor: Redactor | None = None) -> None:
        self._env = env
        self._redactor = redactor or Redactor()
        self._output: asyncio.ReadTransport | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._loop = asyncio.get_running_loop()
        self.inbox = Inbox(self._loop)
        self.tasks_run = 0
        self._write_fd = -1
        self._lifeline_fd = -1
        self._transport: asyncio.ReadTransport | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    async def start(self, ready_timeout: float = 60.0) -> ChildProcess:
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        r_life, w_life = os.pipe()
        r_print, w_print = os.pipe()  # the child's stdout and stderr
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "app.worker.child",
                str(r_in), str(w_out), str(r_life), str(os.getpid()),
                pass_fds=(r_in, w_out, r_life),
                start_new_session=True,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=w_print, stderr=w_print,
                env=self._env,
            )
        except BaseException:
            for fd in (w_in, r_out, w_life, r_print):
                os.close(fd)
            raise
        finally:
            for fd in (r_in, w_out, r_life, w_print):
                os.close(fd)
        self._write_fd, self._lifeline_fd = w_in, w_life
        os.set_blocking(w_in, True)
        loop = asyncio.get_running_loop()
        redactor = self._redactor
        self._output, _ = await loop.connect_read_pipe(
            lambda: _OutputProtocol(redactor), os.fdopen(r_print, "rb", 0))
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

    def signal_group(self, sig: int) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    async def kill(self, grace: float = 0.0) -> int | None:
        """SIGTERM the child's process group, wait ``grace``, then SIGKILL it."""
        if self.proc is None:
            return None
        if grace > 0 and self.alive:
            self.signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                pass
        self.signal_group(signal.SIGKILL)  # also whatever the plugin left in the group
        code = await self.proc.wait()
        self._close()
        return code

    async def stop(self, timeout: float = 5.0) -> None:
        """Ask an idle child to exit; kill it if it does not."""
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
            # ends when the child's group is gone); close it later in any case (a process
            # the plugin detached from the group may hold it open)
            if not self._output.is_closing():
                self._loop.call_later(OUTPUT_LINGER, self._output.close)
            self._output = None
