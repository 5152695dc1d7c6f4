"""``stockq worker`` with its idle-to-done path timed (for bench/latency_stages.py).

The supervisor's methods on that path are wrapped to note ``time.perf_counter()``
(CLOCK_MONOTONIC: comparable with the driver's clock on the same machine) at each step
of every task: the doorbell's answer, the claim's answer, the task sent to the child,
the child's result read, the attempt recorded.  SIGUSR1 writes them, and the garbage
collector's pauses, as JSON to ``argv[1]`` and exits."""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from app import entry

pc = time.perf_counter
RECORDS: list[dict[str, float]] = []
GC_PAUSES: list[tuple[int, float]] = []
_current: dict[str, float] = {}
_gc_start: list[float] = []


def _instrument() -> None:
    from app.queue import TaskQueue
    from app.worker import endings, process
    from app.worker import supervisor as sv

    wait_for_doorbell, claim_work = TaskQueue.wait_for_doorbell, TaskQueue.claim_work
    send, result, settle = process.ChildProcess.send, sv.Supervisor._result, endings.Recorder.settle

    async def timed_wait(self: Any, timeout: float) -> bool:
        rung = await wait_for_doorbell(self, timeout)
        _current.clear()
        _current["rung"] = pc()
        return rung

    async def timed_claim(self: Any, *args: Any, **kw: Any) -> Any:
        item = await claim_work(self, *args, **kw)
        if item is not None:
            _current["claimed"] = pc()
        return item

    def timed_send(self: Any, message: dict[str, Any]) -> None:
        send(self, message)
        if message.get("type") == "run":
            _current["sent"] = pc()

    def timed_result(child: Any, running: Any, msg: dict[str, Any]) -> Any:
        _current["result"] = pc()
        return result(child, running, msg)

    async def timed_settle(self: Any, *args: Any, **kw: Any) -> Any:
        out = await settle(self, *args, **kw)
        _current["recorded"] = pc()
        if "rung" in _current and "claimed" in _current:
            RECORDS.append(dict(_current))
        return out

    TaskQueue.wait_for_doorbell = timed_wait  # type: ignore[method-assign]
    TaskQueue.claim_work = timed_claim  # type: ignore[method-assign]
    process.ChildProcess.send = timed_send  # type: ignore[method-assign]
    sv.Supervisor._result = staticmethod(timed_result)  # type: ignore[method-assign]
    endings.Recorder.settle = timed_settle  # type: ignore[method-assign]


def _gc_callback(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_start[:] = [pc()]
    elif _gc_start:
        GC_PAUSES.append((info["generation"], pc() - _gc_start[0]))


def main() -> None:
    out = Path(sys.argv[1])
    entry.start_early(["worker", "--concurrency", "1"])
    _instrument()
    gc.callbacks.append(_gc_callback)

    def dump(*_: object) -> None:
        out.write_text(json.dumps({"records": RECORDS, "gc": GC_PAUSES}))
        os._exit(0)

    signal.signal(signal.SIGUSR1, dump)
    from app.cli import main as cli_main

    sys.exit(cli_main(["worker", "--concurrency", "1"]))


if __name__ == "__main__":
    main()
