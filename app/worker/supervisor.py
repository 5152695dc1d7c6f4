"""The pool supervisor: claims tasks for idle children, enforces deadlines, renews
leases, writes every transition, and recovers from dead children and dead peers.

One asyncio process.  Each slot runs :meth:`Supervisor._slot_loop`: claim (or wait on
the doorbell), hand the task to the slot's child, wait for its result, a timeout, a
cancel or the child's death, then record the outcome — finishing a task and claiming
the next one in a single Redis round trip while the pool is not stopping.  A child
that must be killed (or died) is handed to a background ending (app/worker/endings.py)
and the slot takes the warm spare child at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from app.environment import child_environment
from app.errors import RedisUnavailable, StockqError
from app.keys import DEFAULT_QUEUE
from app.logs import get_logger
from app.models import WorkItem
from app.queue import Clock, TaskQueue, iso_time
from app.settings import Settings
from app.worker import tree
from app.worker.capabilities import Capabilities, capabilities
from app.worker.endings import (
    DETACHED,
    Outcome,
    Recorder,
    Running,
    crash_outcome,
    killed_outcome,
)
from app.worker.forks import ForkFailed, ForkServer
from app.worker.output import OutputCapture, OutputProtocol
from app.worker.process import INTERRUPT, UNREAPED, ChildConfig, ChildGone, ChildProcess
from app.worker.procs import is_subreaper, new_worker_id
from app.worker.services import SupervisorServices
from plugins_bridge.warehouse import Warehouse

log = get_logger("stockq.worker")


@dataclass(slots=True)
class PoolOptions:
    concurrency: int = max(1, os.cpu_count() or 1)
    max_tasks_per_child: int = 10_000
    shutdown_grace: float = 30.0  # running tasks may finish within this after SIGTERM
    kill_grace: float = 2.0  # SIGTERM -> SIGKILL of a child's process tree
    output_wait: float = 0.5  # a killed child's output pipe may still deliver
    progress_interval: float = 0.25  # coalesced progress writes per task
    doorbell_timeout: float = 1.0  # also the pick-up delay for original-format pushes
    maintenance_interval: float = 1.0
    cleanup_interval: float = 60.0
    zombie_interval: float = 30.0  # a subreaper collects orphans that exited meanwhile
    heartbeat_interval: float = 5.0
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)  # the named queues it serves


@dataclass(slots=True)
class Slot:
    index: int
    child: ChildProcess | None = None
    running: Running | None = None
    loop_task: asyncio.Task[None] | None = None
    waiting: bool = False  # blocked on the doorbell (safe to cancel)


class Supervisor:
    def __init__(self, queue: TaskQueue, settings: Settings, options: PoolOptions | None = None,
                 *, worker_id: str | None = None, clock: Clock = time.time,
                 warehouse: Warehouse | None = None, forks: ForkServer | None = None) -> None:
        self.queue = queue
        self.services = SupervisorServices(queue, warehouse)
        self._calls: set[asyncio.Task[None]] = set()
        self.settings = settings
        self.options = options or PoolOptions()
        self.clock = clock
        self.worker_id = worker_id or new_worker_id()
        self.slots = [Slot(i) for i in range(self.options.concurrency)]
        self._child_config = ChildConfig(
            env=child_environment(), redactor=queue.redact, worker_id=self.worker_id,
            output_keep_bytes=settings.task_output_bytes,
            output_log_bytes=settings.task_output_log_bytes)
        self._stopping = asyncio.Event()
        self._stop_now = asyncio.Event()
        self.recorder = Recorder(queue, self.worker_id, self._stop_now)
        # attempts whose killed (or dead) child's tree is being killed: their leases
        # are renewed until the ending records them
        self._dying: dict[str, Running] = {}
        self._endings: set[asyncio.Task[None]] = set()
        self._spare: asyncio.Task[ChildProcess] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._retiring: list[asyncio.Task[Any]] = []
        self.started_at = clock()
        self.capabilities = Capabilities((), self.options.queues)
        self._last_cleanup = 0.0
        self._last_zombies = 0.0
        # where children come from (app/worker/forkserver.py); launched early by
        # ``stockq worker``, else at the start of run(); None once forking is refused
        self._forks: ForkServer | None = forks
        self._forks_lock = asyncio.Lock()
        self._spawn_only = False
        self._forks_output: asyncio.ReadTransport | None = None

    @property
    def processed(self) -> int:
        return self.recorder.processed

    def _ctx(self, task: WorkItem) -> dict[str, Any]:
        return {"task_id": task.task_id, "plugin": task.plugin_name, "attempt": task.attempt,
                "worker": self.worker_id, "execution_id": task.execution_id or None}

    # ------------------------------------------------------------------ children
    async def _fork_server(self) -> ForkServer | None:
        """The pool's fork server, ready (a new one when it died); None when children
        are started as fresh interpreters instead (a plugin started a thread at
        import: a fork would lose it)."""
        async with self._forks_lock:
            forks = self._forks
            if self._spawn_only:
                return None
            if forks is not None and forks.alive and forks.ready:
                return forks
            if forks is not None and not forks.alive:  # killed: its children with it
                code = await self._stop_fork_server(forks)
                log.error("worker.forkserver_died", worker=self.worker_id, pid=forks.pid,
                          exit_code=code)
                forks = None
            if forks is None:
                forks = self._forks = ForkServer.launch(self._child_config.env,
                                                        self.worker_id)
            UNREAPED.add(forks.pid)
            await self._capture_output(forks.output_fd)
            try:
                ready = await forks.attach()
            except (ForkFailed, TimeoutError) as exc:
                log.error("worker.forkserver_failed", worker=self.worker_id, error=str(exc))
                await self._stop_fork_server(forks)
                raise ChildGone(f"the fork server did not start: {exc}") from None
            if not ready.get("fork_safe"):
                log.warning("worker.forkserver_unsafe", worker=self.worker_id,
                            reason="a thread was running after the plugins were loaded; "
                                   "children start as fresh interpreters")
                self._spawn_only = True
                await self._stop_fork_server(forks)
                return None
            log.info("worker.forkserver_started", worker=self.worker_id, pid=forks.pid)
            return forks

    async def _stop_fork_server(self, forks: ForkServer) -> int | None:
        """Stop (or collect) a fork server; its exit code."""
        await forks.stop()
        UNREAPED.discard(forks.pid)
        if self._forks is forks:
            self._forks = None
        return forks.proc.returncode

    async def _capture_output(self, fd: int) -> None:
        """What the fork server prints (the plugins' imports) is masked and bounded
        like a child's idle output (app/worker/output.py)."""
        if self._forks_output is not None:
            self._forks_output.close()
        capture = OutputCapture(self._child_config.redactor,
                                keep_bytes=self._child_config.output_keep_bytes,
                                log_bytes=self._child_config.output_log_bytes)
        self._forks_output, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: OutputProtocol(capture), os.fdopen(fd, "rb", 0))

    async def _spawn(self) -> ChildProcess:
        forks = await self._fork_server()
        child = await ChildProcess(self._child_config).start(forks=forks)
        log.info("worker.spawned", worker=self.worker_id, pid=child.pid)
        return child

    def _prepare_spare(self) -> None:
        if self._spare is None:
            self._spare = asyncio.create_task(self._spawn())

    async def _take_child(self) -> ChildProcess:
        """A ready child: the warm spare if there is one, then start a new spare."""
        while True:
            self._prepare_spare()
            spare, self._spare = self._spare, None
            assert spare is not None
            try:
                child = await spare
            except (ChildGone, OSError, TimeoutError) as exc:
                log.error("worker.spawn_failed", worker=self.worker_id, error=str(exc))
                await asyncio.sleep(1.0)
                continue
            self._prepare_spare()
            return child

    async def _replace_child(self, slot: Slot, *, dead: bool = False) -> None:
        """Give the slot a fresh child; an old idle one is stopped in the background."""
        old, slot.child = slot.child, None
        self._retiring = [t for t in self._retiring if not t.done()]
        if old is not None:
            self._retiring.append(asyncio.create_task(old.kill() if dead else old.stop()))
            if not dead:
                reason = old.retire or ("max_tasks" if old.alive else "exited")
                log.info("worker.recycled", worker=self.worker_id, pid=old.pid,
                         tasks_run=old.tasks_run, reason=reason)
        slot.child = await self._take_child()

    # ------------------------------------------------------------------ main
    async def run(self, *, install_signals: bool = True) -> int:
        """Run until :meth:`request_stop`; SIGTERM/SIGINT call it unless the caller
        (``stockq run``) routes signals itself."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if install_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop)
        try:
            forks = await self._fork_server()
            if forks is not None:  # the plugins are known before the children exist:
                self._advertise(forks.ready)  # each slot claims once its child is forked
                beat = asyncio.create_task(self._heartbeat())
                await asyncio.gather(*(self._start_slot(slot) for slot in self.slots))
                await beat
            else:  # fresh interpreters say what they loaded
                children = await asyncio.gather(*(self._spawn() for _ in self.slots))
                for slot, child in zip(self.slots, children, strict=True):
                    slot.child = child
                self._advertise(children[0].ready)
                await self._heartbeat()
                for slot in self.slots:
                    slot.loop_task = asyncio.create_task(self._guarded_slot(slot))
            self._prepare_spare()
            self._background = [
                asyncio.create_task(self._every(min(2.0, self.settings.lease_seconds / 3),
                                                self._renew)),
                asyncio.create_task(self._every(self.options.progress_interval, self._flush)),
                asyncio.create_task(self._every(self.options.maintenance_interval,
                                                self._maintain)),
                asyncio.create_task(self._every(self.options.heartbeat_interval,
                                                self._heartbeat)),
            ]
            log.info("worker.started", worker=self.worker_id,
                     concurrency=self.options.concurrency,
                     plugins=list(self.capabilities.plugins),
                     queues=list(self.capabilities.queues))
            await self._stopping.wait()
            await self._drain()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await self._shutdown_children()
        log.info("worker.stopped", worker=self.worker_id, processed=self.processed)
        return 0

    async def _start_slot(self, slot: Slot) -> None:
        slot.child = await self._spawn()
        slot.loop_task = asyncio.create_task(self._guarded_slot(slot))

    def request_stop(self) -> None:
        """First call: drain; second call: stop at once."""
        if self._stopping.is_set():
            log.warning("worker.stopping_now", worker=self.worker_id)
            self._stop_now.set()
            self._interrupt_all("shutdown")
        else:
            log.info("worker.stopping", worker=self.worker_id,
                     grace_seconds=self.options.shutdown_grace)
            self._stopping.set()

    async def _drain(self) -> None:
        """Stop claiming; give running tasks the grace period, then requeue them."""
        for slot in self.slots:
            if slot.waiting and slot.loop_task is not None:
                slot.loop_task.cancel()
        pending: set[asyncio.Task[Any]] = {s.loop_task for s in self.slots
                                           if s.loop_task is not None}
        stop_now: asyncio.Task[Any] = asyncio.create_task(self._stop_now.wait())
        deadline = asyncio.get_running_loop().time() + self.options.shutdown_grace
        while pending and not self._stop_now.is_set():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            _, pending = await asyncio.wait(pending | {stop_now}, timeout=remaining,
                                            return_when=asyncio.FIRST_COMPLETED)
            pending.discard(stop_now)
        stop_now.cancel()
        self._interrupt_all("shutdown")
        await asyncio.gather(*(s.loop_task for s in self.slots if s.loop_task is not None),
                             return_exceptions=True)
        # killed attempts are recorded once their trees are dead (renewals go on)
        await asyncio.gather(*self._endings, return_exceptions=True)
        for t in self._background:
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        try:
            await self.queue.remove_worker(self.worker_id)
        except StockqError:
            pass

    def _interrupt_all(self, reason: str) -> None:
        for slot in self.slots:
            if slot.running is not None and slot.child is not None:
                slot.running.interrupted = slot.running.interrupted or reason
                slot.child.interrupt(reason)

    async def _shutdown_children(self) -> None:
        children = [s.child for s in self.slots if s.child is not None]
        if self._spare is not None:
            self._spare.cancel()
            try:
                children.append(await self._spare)
            except (asyncio.CancelledError, ChildGone, OSError, TimeoutError):
                pass
        await asyncio.gather(*(c.stop() for c in children), *self._retiring,
                             return_exceptions=True)
        forks, self._forks = self._forks, None
        if forks is not None:
            await forks.stop()
            UNREAPED.discard(forks.pid)
        if self._forks_output is not None:
            self._forks_output.close()

    async def _every(self, interval: float, job: Any) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except RedisUnavailable as exc:
                log.warning("worker.redis_unavailable", worker=self.worker_id, error=str(exc))
            except Exception as exc:  # a bug must not stop renewals or the reaper
                log.exception("worker.maintenance_error", worker=self.worker_id,
                              error=str(exc))

    # ------------------------------------------------------------------ slots
    async def _guarded_slot(self, slot: Slot) -> None:
        """Run a slot; an unexpected error is logged and the slot starts over (the
        task it held, if any, is recovered through its lease)."""
        while True:
            try:
                await self._slot_loop(slot)
                return
            except Exception as exc:
                log.exception("worker.slot_error", worker=self.worker_id, slot=slot.index,
                              error=str(exc))
                slot.running = None
                if slot.child is not None:
                    await slot.child.kill()
                    slot.child = None
                await asyncio.sleep(1.0)

    async def _slot_loop(self, slot: Slot) -> None:
        task: WorkItem | None = None
        just_tried = False  # the last settle already tried to claim and found nothing
        backoff = 0.2
        while True:
            if task is None:
                if self._stopping.is_set():
                    return
                try:
                    task = await self._claim_or_wait(slot, skip_claim=just_tried)
                    just_tried = False
                    backoff = 0.2
                except RedisUnavailable as exc:
                    log.warning("worker.redis_unavailable", worker=self.worker_id,
                                error=str(exc))
                    await asyncio.sleep(backoff)
                    backoff = min(5.0, backoff * 2)
                    continue
                if task is None:
                    continue
            ctx = self._ctx(task)  # the fields of every event about this attempt
            if self._stopping.is_set():  # claimed as the stop began: give it back
                await self.recorder.settle(
                    task, Outcome("shutdown", checkpoint=task.checkpoint), ctx, claim=False)
                return
            outcome = await self._execute(slot, task, ctx)
            slot.running = None
            if outcome is DETACHED:  # its ending records it
                task, just_tried = None, False
                continue
            task, just_tried = await self.recorder.settle(
                task, outcome, ctx, claim=not self._stopping.is_set())

    async def _claim_or_wait(self, slot: Slot, *, skip_claim: bool = False) -> WorkItem | None:
        task = None if skip_claim else await self.queue.claim_work(self.worker_id)
        if task is None and not self._stopping.is_set():
            slot.waiting = True
            try:
                await self.queue.wait_for_doorbell(self.options.doorbell_timeout)
            finally:
                slot.waiting = False
        return task

    async def _execute(self, slot: Slot, task: WorkItem, ctx: dict[str, Any]) -> Outcome:
        if (slot.child is None or not slot.child.alive or slot.child.retire
                or slot.child.tasks_run >= self.options.max_tasks_per_child):
            await self._replace_child(slot)
        child = slot.child
        assert child is not None
        running = Running(task=task, started=time.monotonic(), checkpoint=task.checkpoint)
        slot.running = running
        # the stored fields; the child decodes them (protocol.work_payload)
        message = {"type": "run", "task": task.fields}
        try:
            self._begin_output(child)
            child.send(message)
        except ChildGone:  # it died while idle: the task never reached it
            await self._replace_child(slot, dead=True)
            child = slot.child
            assert child is not None
            try:
                self._begin_output(child)
                child.send(message)
            except ChildGone as exc:
                return await self._end_child(slot, child, running, "crash", str(exc))
        log.info("task.started", pid=child.pid, **ctx)
        timer = child.interrupt_later(task.timeout_seconds, "timeout")
        try:
            return await self._await_outcome(slot, child, running)
        finally:
            timer.cancel()

    def _begin_output(self, child: ChildProcess) -> None:
        dropped = child.output.begin()
        if dropped:
            log.warning("worker.output_dropped", worker=self.worker_id, pid=child.pid,
                        unlogged_bytes=dropped)

    async def _await_outcome(self, slot: Slot, child: ChildProcess,
                             running: Running) -> Outcome:
        while True:
            msg = await child.inbox.get()
            if msg is None:
                return await self._end_child(slot, child, running, "crash")
            kind = msg.get("type")
            if kind == "progress":
                running.progress = msg
                if msg.get("checkpoint"):
                    running.checkpoint = str(msg["checkpoint"])
            elif kind == "result":
                return self._result(child, running, msg)
            elif kind == "call":  # a plugin waits for the reply; the deadline does not
                call = asyncio.create_task(self._serve_call(child, msg))
                self._calls.add(call)
                call.add_done_callback(self._calls.discard)
            elif kind == INTERRUPT:
                reason = running.interrupted or str(msg.get("reason"))
                if reason == "timeout":
                    log.warning("task.timeout", timeout_seconds=running.task.timeout_seconds,
                                **self._ctx(running.task))
                return await self._end_child(slot, child, running, reason)

    @staticmethod
    def _result(child: ChildProcess, running: Running, msg: dict[str, Any]) -> Outcome:
        child.tasks_run += 1
        child.drain_output()  # printed before the result, on the other pipe
        error_type = str(msg.get("error_type", ""))
        if error_type == "memory_exceeded":  # its heap is not to be trusted any more
            child.retire = error_type
        return Outcome(
            "ok" if msg.get("ok") else "failed", records=int(msg.get("records", 0)),
            error_type=error_type, error=str(msg.get("error", "")),
            retry_after=msg.get("retry_after"),
            checkpoint=str(msg.get("checkpoint") or running.checkpoint),
            result=msg.get("result") or {}, output=child.output.end(),
        )

    async def _serve_call(self, child: ChildProcess, msg: dict[str, Any]) -> None:
        reply = await self.services.handle(msg)
        if child.alive:
            try:
                child.send(reply)
            except ChildGone:  # the child died meanwhile: its attempt ends on its own
                pass

    async def _end_child(self, slot: Slot, child: ChildProcess, running: Running,
                         reason: str, detail: str | None = None) -> Outcome:
        """The slot's child must go (``reason``: timeout, cancel, lost, shutdown) or has
        died (``crash``): its tree is killed and the attempt recorded in the
        background; the slot takes the warm spare child now."""
        slot.child = None
        slot.running = None
        if reason != "lost":  # a lost lease is someone else's to renew
            self._dying[running.task.task_id] = running
        ending = asyncio.create_task(self._kill_and_record(child, running, reason, detail))
        self._endings.add(ending)
        ending.add_done_callback(self._endings.discard)
        if not self._stop_now.is_set():
            slot.child = await self._take_child()
        return DETACHED

    async def _kill_and_record(self, child: ChildProcess, running: Running, reason: str,
                               detail: str | None) -> None:
        task = running.task
        ctx = self._ctx(task)
        try:
            code = await child.kill(0.0 if reason == "crash" else self.options.kill_grace)
            await child.output.wait_closed(self.options.output_wait)
            if reason == "crash":
                how = detail or (f"killed by signal {-code}" if code is not None and code < 0
                                 else f"exited with code {code}")
                log.error("worker.child_died", pid=child.pid, detail=how,
                          descendants=child.descendants_killed, **ctx)
                out = crash_outcome(how, running)
            else:
                log.warning("worker.killed", pid=child.pid, reason=reason, exit_code=code,
                            descendants=child.descendants_killed, **ctx)
                out = killed_outcome(reason, running)
            out.output = child.output.end()
            await self.recorder.settle(task, out, ctx, claim=False)
            if is_subreaper():  # its exited, unwaited children came to us as zombies
                await asyncio.to_thread(tree.reap_zombies, frozenset(UNREAPED))
        except Exception as exc:  # the lease brings the task back
            log.exception("worker.ending_error", error=str(exc), **ctx)
        finally:
            self._dying.pop(task.task_id, None)

    # ------------------------------------------------------------------ loops
    async def _renew(self) -> None:
        leases = {s.running.task.task_id: s.running.task.lease_token
                  for s in self.slots if s.running is not None}
        leases.update({tid: r.task.lease_token for tid, r in self._dying.items()})
        if not leases:
            return
        res = await self.queue.renew(leases)
        for slot in self.slots:
            r = slot.running
            if r is None or slot.child is None or r.interrupted:
                continue
            if r.task.task_id in res.lost:
                r.interrupted = "lost"
                slot.child.interrupt("lost")
            elif r.task.task_id in res.cancel_requested:
                r.interrupted = "cancel"
                slot.child.interrupt("cancel")

    async def _flush(self) -> None:
        """Write the latest progress of each running task (coalesced)."""
        for slot in self.slots:
            r = slot.running
            if r is None or r.progress is None or r.interrupted:
                continue
            msg, r.progress = r.progress, None
            try:
                cancel = await self.queue.progress(
                    r.task, float(msg.get("percent", 0)), int(msg.get("records", 0)),
                    str(msg.get("message", "")), checkpoint=str(msg.get("checkpoint", "")))
            except StockqError:
                continue  # ended meanwhile, or Redis is away: the next write catches up
            log.info("task.progress", percent=msg.get("percent"), records=msg.get("records"),
                     **self._ctx(r.task))
            if cancel and slot.running is r and slot.child is not None and not r.interrupted:
                r.interrupted = "cancel"
                slot.child.interrupt("cancel")

    async def _maintain(self) -> None:
        await self.queue.reap()
        now = self.clock()
        if now - self._last_cleanup >= self.options.cleanup_interval:
            self._last_cleanup = now
            await self.queue.cleanup()
        if is_subreaper() and now - self._last_zombies >= self.options.zombie_interval:
            self._last_zombies = now
            await asyncio.to_thread(tree.reap_zombies, frozenset(UNREAPED))

    def _advertise(self, ready: dict[str, Any]) -> None:
        """Claim only what this pool can run (app/worker/capabilities.py)."""
        caps = capabilities(ready, self.settings, warehouse=self.services.warehouse is not None,
                            queues=self.options.queues)
        self.capabilities = caps
        self.queue.advertise(caps.plugins, caps.queues)
        if caps.load_error:
            log.error("worker.plugins_failed", worker=self.worker_id, error=caps.load_error)
        for name, why in sorted(caps.not_runnable.items()):
            log.warning("worker.plugin_not_runnable", worker=self.worker_id, plugin=name,
                        reason=why)

    async def _heartbeat(self) -> None:
        await self.queue.heartbeat(self.worker_id, {
            "host": socket.gethostname(), "pid": os.getpid(),
            "concurrency": self.options.concurrency,
            "running": sum(1 for s in self.slots if s.running is not None),
            "processed": self.processed,
            "started_at": iso_time(self.started_at),
            "demo": "1" if self.settings.demo else "",
            "warehouse": self.services.warehouse.url_redacted
            if self.services.warehouse is not None else "",
            **self.capabilities.heartbeat_fields(),
        }, ttl=self.options.heartbeat_interval * 3)
