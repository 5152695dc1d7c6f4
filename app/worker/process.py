"""One worker child as the supervisor sees it: start, talk, kill, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from app.worker.protocol import HEADER, MAX_FRAME, decode, encode

INTERRUPT = "_interrupt"  # messages the supervisor itself puts in a child's inbox


class ChildGone(Exception):
    """The child exited (or could not start)."""


class ChildProcess:
    """A long-lived child in its own session; messages arrive in :attr:`inbox`."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.tasks_run = 0
        self._write_fd = -1
        self._lifeline_fd = -1
        self._reader_task: asyncio.Task[None] | None = None
        self._transport: asyncio.ReadTransport | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    async def start(self, ready_timeout: float = 60.0) -> ChildProcess:
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        r_life, w_life = os.pipe()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "app.worker.child",
                str(r_in), str(w_out), str(r_life), str(os.getpid()),
                pass_fds=(r_in, w_out, r_life),
                start_new_session=True,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sys.stderr.fileno(),
                env=self._env,
            )
        finally:
            for fd in (r_in, w_out, r_life):
                os.close(fd)
        self._write_fd, self._lifeline_fd = w_in, w_life
        os.set_blocking(w_in, True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_FRAME)
        self._transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(r_out, "rb", 0)
        )
        self._reader_task = asyncio.create_task(self._read_frames(reader))
        first = await asyncio.wait_for(self.inbox.get(), ready_timeout)
        if not first or first.get("type") != "ready":
            await self.kill()
            raise ChildGone("worker child did not start")
        return self

    async def _read_frames(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                head = await reader.readexactly(HEADER.size)
                (size,) = HEADER.unpack(head)
                self.inbox.put_nowait(decode(await reader.readexactly(size)))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self.inbox.put_nowait(None)

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
