"""Messages between a supervisor and its children, framed on a pipe.

Each frame is a 4-byte big-endian length followed by a UTF-8 JSON object with a
``type``.  Supervisor -> child: ``run`` (a task), ``stop``.  Child -> supervisor:
``ready`` (after start-up), ``progress``, ``result``.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Literal, TypedDict

HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024


class RunMessage(TypedDict):
    type: Literal["run"]
    task: dict[str, Any]


class ProgressMessage(TypedDict, total=False):
    type: Literal["progress"]
    task_id: str
    percent: float
    records: int
    message: str
    checkpoint: str


class ResultMessage(TypedDict, total=False):
    type: Literal["result"]
    task_id: str
    ok: bool
    records: int
    error_type: str
    error: str
    retry_after: float
    checkpoint: str
    result: dict[str, Any]


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, ensure_ascii=False, default=str).encode("utf-8")
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    value = json.loads(body)
    if not isinstance(value, dict) or "type" not in value:
        raise ValueError("frame is not a message")
    return value


class BlockingChannel:
    """The child's end: blocking reads and writes on raw file descriptors."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._rfd = read_fd
        self._wfd = write_fd

    def _read_exact(self, n: int) -> bytes | None:
        chunks = []
        while n:
            chunk = os.read(self._rfd, min(n, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv(self) -> dict[str, Any] | None:
        """The next message, or None when the supervisor closed the pipe."""
        head = self._read_exact(HEADER.size)
        if head is None:
            return None
        (size,) = HEADER.unpack(head)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes is too large")
        body = self._read_exact(size)
        return None if body is None else decode(body)

    def send(self, message: dict[str, Any]) -> None:
        data = memoryview(encode(message))
        while data:
            written = os.write(self._wfd, data)
            data = data[written:]
