"""Messages between a supervisor and its children, framed on a pipe.

Each frame is a 4-byte big-endian length followed by a UTF-8 JSON object with a
``type``.  Supervisor -> child: ``run`` (the claimed task's stored fields, as strings:
the child decodes them with :func:`work_payload`, so that work is done in
parallel by the children rather than by the one supervisor), ``stop``.  Child ->
supervisor: ``ready`` (after start-up), ``progress``, ``result``.  A read usually holds
exactly one frame (:class:`FrameBuffer` cuts them otherwise).
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
    task: dict[str, str]  # app.models.WORK_FIELDS -> stored value


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


# json.dumps(ensure_ascii=False, default=str) and json.loads build their encoder and
# decoder at every call; these are built once (a message is encoded twice per task)
_dumps = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":")).encode
_loads = json.JSONDecoder().decode
_pack = HEADER.pack
_unpack_from = HEADER.unpack_from


def encode(message: dict[str, Any]) -> bytes:
    body = _dumps(message).encode("utf-8")
    return _pack(len(body)) + body


def decode(body: bytes | bytearray | memoryview) -> dict[str, Any]:
    value = _loads(bytes(body).decode("utf-8"))
    if not isinstance(value, dict) or "type" not in value:
        raise ValueError("frame is not a message")
    return value


class FrameBuffer:
    """Cuts frames out of a byte stream: :meth:`feed` what was read, get the messages
    completed by it (usually one read holds exactly one frame)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """The messages ``data`` completes; ValueError for a corrupt or oversized frame."""
        buf = self._buf
        if not buf and len(data) >= HEADER.size:  # usually a read is exactly one frame
            (size,) = _unpack_from(data)
            if len(data) == HEADER.size + size:
                return [decode(memoryview(data)[HEADER.size:])]
        buf += data
        out = []
        while len(buf) >= HEADER.size:
            (size,) = _unpack_from(buf)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes is too large")
            end = HEADER.size + size
            if len(buf) < end:
                break
            body = bytes(buf[HEADER.size:end])
            del buf[:end]
            out.append(decode(body))
        return out


def _int(raw: str | None) -> int:
    try:
        return int(float(raw)) if raw else 0
    except (ValueError, OverflowError):
        return 0


def _json(raw: str | None, default: Any) -> Any:
    try:
        return _loads(raw) if raw else default
    except ValueError:
        return default


def work_payload(f: dict[str, str]) -> dict[str, Any]:
    """The task a child runs (``plugins_bridge.runner.run_task``) from the stored fields
    of a run message, decoded as ``app.models.Task.from_hash`` decodes them.  (Here, not
    in app.models: the child does not import the models, hashlib and OpenSSL with them.)"""
    params = _json(f.get("params"), {})
    dates = _json(f.get("trade_dates"), [])
    return {
        "task_id": f.get("task_id", ""), "plugin_name": f.get("plugin_name", ""),
        "task_type": f.get("task_type") or "incremental",
        "trade_dates": [str(d) for d in dates] if isinstance(dates, list) else [],
        "start_date": f.get("start_date", ""), "end_date": f.get("end_date", ""),
        "params": params if isinstance(params, dict) else {},
        "attempt": _int(f.get("attempt")), "checkpoint": f.get("checkpoint", ""),
        "records_processed": _int(f.get("records_processed")),
        "execution_id": f.get("execution_id", ""),
        "memory_limit_mb": _int(f.get("memory_limit_mb")),
        # the original producer's fields (stock_datasource's plugins take them)
        "ts_code": f.get("ts_code", ""), "data_source": f.get("data_source", ""),
    }


class BlockingChannel:
    """The child's end: blocking reads and writes on raw file descriptors (one read
    usually brings one whole frame)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._rfd = read_fd
        self._wfd = write_fd
        self._frames = FrameBuffer()
        self._ready: list[dict[str, Any]] = []

    def recv(self) -> dict[str, Any] | None:
        """The next message, or None when the supervisor closed the pipe."""
        while not self._ready:
            data = os.read(self._rfd, 1 << 16)
            if not data:
                return None
            self._ready.extend(self._frames.feed(data))
        return self._ready.pop(0)

    def send(self, message: dict[str, Any]) -> None:
        data = memoryview(encode(message))
        while data:
            written = os.write(self._wfd, data)
            data = data[written:]
