"""The short chaos run (``python -m bench.chaos --short``, docs/operations.md "Chaos
run") as CI runs it: 200 tasks of four kinds through a real sidecar and the CLI into a
Redis with an append-only file, while a worker child and a supervisor are SIGKILLed, a
worker is restarted and Redis is restarted after SIGTERM and after SIGKILL.  Nothing
may be lost, completed twice, run twice at the same time or left running, and every
task must end as its kind is designed to."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench._chaos_analysis import BAD, EXPECTED, KILL_KINDS

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


def test_short_chaos_run_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    proc = subprocess.run([sys.executable, "-m", "bench.chaos", "--short", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    report = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert out.exists(), report
    result = json.loads(out.read_text())
    columns, per_kind = result["columns"], result["per_kind"]

    assert {k: columns[k] for k in BAD} == dict.fromkeys(BAD, 0), report
    assert proc.returncode == 0, report
    # every kind of kill happened
    assert all(result["info"]["kills"][k] >= 1 for k in KILL_KINDS), report
    # every task was submitted and ended as its kind is designed to
    assert columns["submitted"] == 200
    assert set(per_kind) == set(EXPECTED)
    designed_to_fail = sum(v["submitted"] for k, v in per_kind.items()
                           if EXPECTED[k] == "failed")
    assert columns["failed_as_designed"] == designed_to_fail > 0
    assert columns["completed"] == 200 - designed_to_fail
    # the marks saw every task run, and the kills ended runs that had to be recovered
    assert result["info"]["runs"] >= 200
    assert any(r["affected"] for r in result["recoveries"]
               if r["kind"] in ("child_sigkill", "supervisor_sigkill")), report
