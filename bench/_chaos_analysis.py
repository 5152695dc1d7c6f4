"""What the chaos run (bench/chaos.py) concludes: the plugins' marks read back, each
kill's affected runs and recovery, and the verdict columns."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._procfs import pid_alive

# the kinds of task and how each must end (bench/chaos_plugins.py)
EXPECTED = {"quick": "completed", "slow": "completed", "flaky": "completed",
            "timeout": "failed"}
TIMEOUT_ERRORS = ("timeout", "worker_lost")  # a kill may take the last attempt instead
FINAL = ("completed", "failed", "cancelled")
KILL_KINDS = ("child_sigkill", "supervisor_sigkill", "worker_restart", "redis_sigterm",
              "redis_sigkill")
BAD = ("never_accepted", "lost", "completed_twice", "ran_twice_at_once", "stuck_running",
       "not_as_designed", "orphaned_children")


@dataclass
class Run:
    """One run of a plugin, from its marks (times in ns, wall clock)."""

    task_id: str
    attempt: int
    pid: int
    start: int
    end: int | None = None
    outcome: str = ""
    conflict_with: str = ""  # the pid holding the task's lock when it started


@dataclass
class Event:
    kind: str  # one of KILL_KINDS
    at: float  # when the signal was sent (epoch s)
    victim: str
    pids: list[int] = field(default_factory=list)  # processes whose runs it ended
    back_at: float | None = None  # Redis answering again
    orphans: list[int] = field(default_factory=list)  # children alive after a supervisor
    note: str = ""


class MarksReader:
    """Reads the marks files as they grow (the chaos loop asks which children are busy)
    and once more at the end."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._offsets: dict[Path, int] = {}
        self.runs: dict[tuple[str, int, int], Run] = {}  # (task, pid, start) -> run
        self.open: dict[int, Run] = {}  # pid -> its run without an end mark

    def poll(self) -> None:
        for path in sorted(self.dir.glob("*.marks")):
            offset = self._offsets.get(path, 0)
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
            complete = data.rfind(b"\n") + 1  # a line being written waits for the next poll
            self._offsets[path] = offset + complete
            for line in data[:complete].decode().splitlines():
                self._line(line.split())

    def _line(self, f: list[str]) -> None:
        tag, task_id, attempt, pid, start = f[0], f[1], int(f[2]), int(f[3]), int(f[4])
        run = self.runs.setdefault((task_id, pid, start), Run(task_id, attempt, pid, start))
        if tag == "S":
            self.open[pid] = run
        elif tag == "E":
            run.end, run.outcome = int(f[5]), f[6]
            if self.open.get(pid) is run:
                del self.open[pid]
        elif tag == "C":
            run.conflict_with = f[5]

    def busy(self, pid: int) -> Run | None:
        run = self.open.get(pid)
        return run if run is not None and pid_alive(pid) else None


def iso_seconds(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


@dataclass
class Verdict:
    columns: dict[str, Any]
    per_kind: dict[str, dict[str, int]]
    recoveries: list[dict[str, Any]]
    offenders: dict[str, list[str]]
    info: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(not self.columns[k] for k in BAD)


def _overlaps(runs: list[Run]) -> bool:
    """Two runs of one task at the same moment: a lock conflict, or two runs whose
    marked intervals intersect."""
    if any(r.conflict_with for r in runs):
        return True
    closed = sorted((r for r in runs if r.end is not None), key=lambda r: r.start)
    return any(b.start < a.end for a, b in zip(closed, closed[1:], strict=False)
               if a.end is not None)


def _recoveries(events: list[Event], runs: list[Run], by_task: dict[str, list[Run]],
                final: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """For each kill: the runs it ended and, for each, how long until the task started
    again (or ended, when no attempt was left); for a Redis restart, how long until it
    answered and until a task was next started."""
    out = []
    starts = sorted(r.start for r in runs)
    for ev in events:
        at_ns = int(ev.at * 1e9)
        rec: dict[str, Any] = {**asdict(ev), "affected": []}
        if ev.kind.startswith("redis"):
            back = ev.back_at or ev.at
            rec["down_s"] = back - ev.at
            nxt = next((s for s in starts if s > back * 1e9), None)
            rec["recovery_s"] = (nxt - at_ns) / 1e9 if nxt is not None else None
            rec["recovery_is"] = "kill -> first task started after Redis answered again"
            out.append(rec)
            continue
        pids = set(ev.pids)
        worst = None
        for run in runs:
            if run.pid not in pids or run.start > at_ns or run.end is not None:
                continue
            later = [r for r in by_task[run.task_id] if r.start > at_ns]
            took: float | None
            if later:
                took, how = (min(r.start for r in later) - at_ns) / 1e9, "started again"
            else:
                ended = iso_seconds(final.get(run.task_id, {}).get("updated_at"))
                took = ended - ev.at if ended else None
                how = f"ended {final.get(run.task_id, {}).get('status')}"
            rec["affected"].append({"task_id": run.task_id, "attempt": run.attempt,
                                    "seconds": took, "how": how})
            if took is not None:
                worst = took if worst is None else max(worst, took)
        rec["recovery_s"] = worst
        rec["recovery_is"] = "kill -> each affected task's next start (or its end)"
        out.append(rec)
    return out


def conclude(tasks: dict[str, str], final: dict[str, dict[str, str]], runs: list[Run],
             events: list[Event], completed_logged: Counter[str], completed_rows: Counter[str],
             leftovers: dict[str, list[str]], never_accepted: list[str],
             unacknowledged: list[str]) -> Verdict:
    """``tasks``: task id -> kind of every task the run submitted (and of tasks found in
    Redis that no answer named); ``final``: their hashes at the end."""
    by_task: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_task[r.task_id].append(r)
    offenders: dict[str, list[str]] = {k: [] for k in BAD}
    per_kind: dict[str, dict[str, int]] = {
        k: {"submitted": 0, "completed": 0, "failed": 0, "cancelled": 0, "not_final": 0}
        for k in EXPECTED}
    as_designed = Counter[str]()
    for tid, kind in tasks.items():
        h = final.get(tid) or {}
        status = h.get("status")
        per_kind[kind]["submitted"] += 1
        per_kind[kind][status if status in FINAL else "not_final"] += 1
        if not status:
            offenders["lost"].append(f"{tid} ({kind}): vanished")
        elif status == "running":
            offenders["stuck_running"].append(f"{tid} ({kind}): running")
        elif status not in FINAL:
            offenders["lost"].append(f"{tid} ({kind}): {status}")
        elif status != EXPECTED[kind] or (
                kind == "timeout" and h.get("last_error_type") not in TIMEOUT_ERRORS):
            offenders["not_as_designed"].append(
                f"{tid} ({kind}): {status} [{h.get('last_error_type', '')}] after "
                f"{h.get('attempt')} attempts")
        else:
            as_designed[status] += 1
        if _overlaps(by_task.get(tid, [])):
            offenders["ran_twice_at_once"].append(tid)
        if max(completed_logged[tid], completed_rows[tid]) > 1:
            offenders["completed_twice"].append(
                f"{tid}: {completed_logged[tid]} task.completed events, "
                f"{completed_rows[tid]} completed audit rows")
    for name, ids in leftovers.items():
        offenders["stuck_running"] += [f"{tid}: left in {name}" for tid in ids]
    offenders["never_accepted"] = list(never_accepted)
    for ev in events:
        offenders["orphaned_children"] += [f"pid {p} (supervisor {ev.victim})"
                                           for p in ev.orphans]
    recoveries = _recoveries(events, runs, by_task, final)
    longest = max((r for r in recoveries if r["recovery_s"] is not None),
                  key=lambda r: r["recovery_s"], default=None)
    columns: dict[str, Any] = {
        "submitted": len(tasks) - len(unacknowledged),
        "completed": as_designed["completed"],
        "failed_as_designed": as_designed["failed"],
        **{k: len(v) for k, v in offenders.items()},
        "longest_recovery_s": longest["recovery_s"] if longest else None,
        "longest_recovery_kind": longest["kind"] if longest else None,
    }
    successes = Counter(r.task_id for r in runs if r.outcome == "ok")
    # attempts a claim used up that no run of the plugin marked (claimed, never started)
    unstarted = {tid: int((final.get(tid) or {}).get("attempt") or 0)
                 - len({r.attempt for r in by_task.get(tid, [])}) for tid in tasks}
    kills = Counter(ev.kind for ev in events)
    info = {
        "kills": {k: kills[k] for k in KILL_KINDS},
        "runs": len(runs),
        "runs_without_end_mark": sum(1 for r in runs if r.end is None),
        "attempts_used_without_a_run": sum(n for n in unstarted.values() if n > 0),
        "tasks_with_such_an_attempt": [t for t, n in unstarted.items() if n > 0][:10],
        "tasks_succeeding_in_more_than_one_run": sum(1 for n in successes.values() if n > 1),
        "tasks_created_without_an_answer": len(unacknowledged),
        "attempts_per_kind": {k: dict(sorted(Counter(
            int(final.get(t, {}).get("attempt") or 0) for t, kk in tasks.items() if kk == k
        ).items())) for k in EXPECTED},
    }
    return Verdict(columns, per_kind, recoveries, {k: v[:20] for k, v in offenders.items()},
                   info)
