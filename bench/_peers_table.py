"""The peer comparison's summary: medians per system from the harness's raw lines, the
table, and issue 20's targets as ratios from the same run (PASS/MISS)."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STOCKQ = "stockq default"
HUEY = "huey process"
LEASE_SECONDS = 30.0  # the stockq worker's default lease (the crash scenario waits it out)


@dataclass
class SystemRuns:
    """The runs of one system (or variant) by scenario."""

    label: str
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    versions: dict[str, str] = field(default_factory=dict)

    def values(self, scenario: str, key: str) -> list[float]:
        return [float(r[key]) for r in self.runs.get(scenario, [])
                if r.get(key) is not None and not isinstance(r.get(key), bool)]

    def median(self, scenario: str, key: str) -> float | None:
        vals = self.values(scenario, key)
        return statistics.median(vals) if vals else None


@dataclass
class Summary:
    systems: dict[str, SystemRuns]
    errors: list[str]
    loads: list[float]

    def get(self, label: str) -> SystemRuns | None:
        return self.systems.get(label)


def read_raw(paths: list[tuple[Path, str]]) -> Summary:
    """The harness's JSON lines; each file's stockq rows get its label suffix (a
    baseline tree is 'stockq default (baseline)')."""
    systems: dict[str, SystemRuns] = {}
    errors: list[str] = []
    loads: list[float] = []
    for path, suffix in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("load1") is not None:
                loads.append(float(rec["load1"]))
            label = f"{rec.get('system')} {rec.get('variant', 'default')}"
            if suffix and rec.get("system") == "stockq":
                label += suffix
            if "error" in rec or "result" not in rec:
                errors.append(f"{label} {rec.get('scenario')}: {rec.get('error')}")
                continue
            sr = systems.setdefault(label, SystemRuns(label))
            sr.runs[str(rec["scenario"])].append(dict(rec["result"]))
            sr.versions = {k: str(v) for k, v in (rec.get("versions") or {}).items() if v}
            sr.versions["python"] = str(rec.get("python", ""))
    return Summary(systems, errors, loads)


def _num(v: float | None, fmt: str = "{:,.0f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def table(summary: Summary) -> list[str]:
    """The medians per system as a Markdown table (stockq first, the peers by drain)."""
    head = ["system", "runs", "enqueue/s", "drain/s from worker start", "steady/s",
            "p50 / p99 ms", "worker start → first job done"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def order(label: str) -> tuple[int, float]:
        drain = summary.systems[label].median("throughput", "drain_per_s") or 0.0
        return (0 if label.startswith("stockq") else 1, -drain)

    for label in sorted(summary.systems, key=order):
        s = summary.systems[label]
        n = max(len(s.runs.get("throughput", [])), len(s.runs.get("latency", [])))
        if not n:
            continue
        p50, p99 = s.median("latency", "p50_ms"), s.median("latency", "p99_ms")
        out.append("| " + " | ".join([
            label, str(n),
            _num(s.median("throughput", "enqueue_per_s")),
            _num(s.median("throughput", "drain_per_s")),
            _num(s.median("throughput", "steady_per_s")),
            f"{_num(p50, '{:.2f}')} / {_num(p99, '{:.2f}')}",
            _num(s.median("throughput", "first_done_s"), "{:.2f} s"),
        ]) + " |")
    return out


@dataclass
class Target:
    name: str
    value: str
    reference: str
    ratio: str
    verdict: str  # PASS, MISS or n/a


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def targets(summary: Summary, stockq: str = STOCKQ) -> list[Target]:
    """Issue 20's targets for the stockq row ``stockq``, from medians of this run."""
    sq = summary.get(stockq) or SystemRuns(stockq)
    huey = summary.get(HUEY) or SystemRuns(HUEY)
    peers = [s for label, s in summary.systems.items() if not label.startswith("stockq")]
    out: list[Target] = []

    first = sq.median("throughput", "first_done_s")
    out.append(Target("worker start → first job done ≤ 0.15 s", _num(first, "{:.3f} s"),
                      "0.15 s", "", _verdict(None if first is None else first <= 0.15)))

    drains = [(s.median("throughput", "drain_per_s") or 0.0, s.label) for s in peers]
    best, best_label = max(drains) if drains else (0.0, "no peer")
    drain = sq.median("throughput", "drain_per_s")
    r = _ratio(drain, best or None)
    out.append(Target(f"drain from worker start ≥ 1.2 × best peer ({best_label})",
                      _num(drain, "{:,.0f}/s"), _num(best or None, "{:,.0f}/s"),
                      _num(r, "{:.2f}×"), _verdict(None if r is None else r >= 1.2)))

    p50, hp50 = sq.median("latency", "p50_ms"), huey.median("latency", "p50_ms")
    r = _ratio(p50, hp50)
    out.append(Target("latency p50 ≤ Huey's", _num(p50, "{:.2f} ms"), _num(hp50, "{:.2f} ms"),
                      _num(r, "{:.2f}×"), _verdict(None if r is None else r <= 1.0)))
    p99 = sq.median("latency", "p99_ms")
    out.append(Target("latency p99 ≤ 2 ms", _num(p99, "{:.2f} ms"), "2 ms", "",
                      _verdict(None if p99 is None else p99 <= 2.0)))

    enq, henq = sq.median("throughput", "enqueue_per_s"), huey.median("throughput",
                                                                          "enqueue_per_s")
    r = _ratio(enq, henq)
    out.append(Target("single-client enqueue ≥ 1.1 × Huey's", _num(enq, "{:,.0f}/s"),
                      _num(henq, "{:,.0f}/s"), _num(r, "{:.2f}×"),
                      _verdict(None if r is None else r >= 1.1)))

    timeouts = sq.runs.get("timeout", [])
    if timeouts:
        failed = sq.median("timeout", "failed_s")
        cut = all(not t.get("post_sleep_code_ran") for t in timeouts)
        follow = all(t.get("followup_done_s") is not None for t in timeouts)
        ok = failed is not None and failed <= 1.2 and cut and follow
        out.append(Target("timeout: failed ≤ 0.2 s after the 1 s deadline, sleep cut off, "
                          "next job done", _num(failed, "{:.2f} s"), "1.2 s",
                          f"{len(timeouts)} runs", _verdict(ok)))
    crashes = sq.runs.get("crash", [])
    if crashes:
        rerun = sq.median("crash", "rerun_after_restart_s")
        done = sq.median("crash", "completed_after_restart_s")
        ok = all(c.get("outcome") == "re-run+completed" for c in crashes) and \
            rerun is not None and rerun <= LEASE_SECONDS + 2
        out.append(Target("crash: re-run ≤ lease + 2 s and completed",
                          f"{_num(rerun, '{:.1f}')} / {_num(done, '{:.1f}')} s",
                          f"{LEASE_SECONDS + 2:.0f} s", f"{len(crashes)} runs",
                          _verdict(ok)))
    return out


def target_lines(items: list[Target]) -> list[str]:
    head = ["target", "stockq", "reference", "ratio", "verdict"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in items:
        out.append(f"| {t.name} | {t.value} | {t.reference} | {t.ratio} | {t.verdict} |")
    return out


def version_lines(summary: Summary) -> list[str]:
    seen: dict[str, str] = {}
    for label, s in sorted(summary.systems.items()):
        system = label.split()[0]
        text = ", ".join(f"{k} {v}" for k, v in s.versions.items())
        seen.setdefault(system, text)
    return [f"- {system}: {text}" for system, text in seen.items()]
