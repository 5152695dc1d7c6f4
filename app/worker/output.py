"""What a worker child prints: masked, bounded, and kept with the task that printed it.

A child's stdout and stderr (its plugins' prints, a traceback, the output of the
programs they start) reach the supervisor on one pipe.  The stream is masked by the
redactor line by line first (a child may run any code: its output is not trusted to
be clean), then, for each task (from the run message to its result or its death):

- its first ``log_bytes`` go to the supervisor's stderr as they come (the rest is
  not written there);
- its last ``keep_bytes`` are kept and stored with the task when the attempt ends
  (``output``, ``output_bytes``, ``output_attempt`` in the task hash);
- everything is counted.

Output while no task runs (start-up, a program still printing after its task ended)
goes to stderr within the same budget per idle spell, and is counted as dropped past it.
"""

from __future__ import annotations

import asyncio
import codecs
from collections import deque
from dataclasses import dataclass

from app.logs import write_output
from app.redaction import Redactor, StreamRedactor


@dataclass(frozen=True, slots=True)
class CapturedOutput:
    """What one attempt printed: the tail kept (masked), and how much there was."""

    text: str  # the last bytes, from a line start where one is near
    total_bytes: int  # everything the attempt printed (as printed, before masking)
    unlogged_bytes: int  # masked output past the log budget, not written to stderr


class OutputCapture:
    """The masked output stream of one child, cut into windows (one per task)."""

    def __init__(self, redactor: Redactor, *, keep_bytes: int, log_bytes: int) -> None:
        self._stream = StreamRedactor(redactor)
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._keep = max(0, keep_bytes)
        self._log_budget = max(0, log_bytes)
        self._tail: deque[bytes] = deque()
        self._kept = 0
        self._total = 0  # bytes read
        self._masked = 0  # bytes of masked text
        self._logged = 0  # of those, written to stderr
        self.ended = False
        self._eof: asyncio.Event | None = None

    # ------------------------------------------------------------ windows
    def begin(self) -> int:
        """Start a task's window; returns the bytes the idle spell before it dropped
        (printed past the log budget)."""
        dropped = self._masked - self._logged
        self._tail.clear()
        self._kept = self._total = self._masked = self._logged = 0
        return dropped

    def end(self) -> CapturedOutput | None:
        """Close the task's window (a partial last line is masked and counted too);
        None when the task printed nothing."""
        self._emit(self._stream.close())
        total, unlogged = self._total, self._masked - self._logged
        data = b"".join(self._tail)
        self.begin()
        if not total:
            return None
        if len(data) >= self._keep > 0:  # cut: start at a line where one is near
            newline = data.find(b"\n", 0, min(len(data), 1024))
            if newline >= 0:
                data = data[newline + 1:]
        return CapturedOutput(data.decode("utf-8", "replace"), total, unlogged)

    # ------------------------------------------------------------ the stream
    def feed(self, data: bytes) -> None:
        self._total += len(data)
        self._emit(self._stream.feed(self._decoder.decode(data)))

    def close(self) -> None:
        """End of the stream (the child and whatever held the pipe are gone)."""
        if not self.ended:
            self.ended = True
            self._emit(self._stream.feed(self._decoder.decode(b"", final=True))
                       + self._stream.close())
            if self._eof is not None:
                self._eof.set()

    async def wait_closed(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the end of the stream."""
        if self.ended:
            return
        if self._eof is None:
            self._eof = asyncio.Event()
        try:
            await asyncio.wait_for(self._eof.wait(), timeout)
        except TimeoutError:
            pass

    def _emit(self, text: str) -> None:
        if not text:
            return
        data = text.encode("utf-8", "surrogateescape")
        self._masked += len(data)
        room = self._log_budget - self._logged
        if room > 0:
            part = data[:room]
            self._logged += len(part)
            # a cut line ends here: the next log line must start a line of its own
            write_output(part.decode("utf-8", "surrogateescape")
                         + ("" if part.endswith(b"\n") else "\n"))
        if self._keep:
            self._tail.append(data)
            self._kept += len(data)
            while self._kept - len(self._tail[0]) >= self._keep:
                self._kept -= len(self._tail.popleft())
            if self._kept > self._keep:  # the oldest piece holds the cut
                first = self._tail[0]
                cut = self._kept - self._keep
                self._tail[0] = first[cut:]
                self._kept -= cut


class OutputProtocol(asyncio.Protocol):
    """The read end of a child's stdout and stderr, into its :class:`OutputCapture`."""

    def __init__(self, capture: OutputCapture) -> None:
        self._capture = capture

    def data_received(self, data: bytes) -> None:
        self._capture.feed(data)

    def eof_received(self) -> bool | None:
        self._capture.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._capture.close()
