"""stockq against the other Python Redis task queues, in the peer harness.

Run from the repository root::

    .venv/bin/python -m bench.peers [--reps 3] [--scenarios throughput,latency]
        [--systems stockq,huey,dramatiq,saq,celery] [--baseline-tree DIR] [--json out.json]

The harness (``run_all.py`` and its adapters, ``../shared/peerbench`` or
``--harness``) is used as it is: this command installs the peers into venvs of their
own under a cache directory (pinned versions, ``_peers_env.PEER_PINS``; made once, then
reused), starts a private ``redis-server`` on a free loopback port (never 6379), points
the harness's stockq adapter at this venv (``PEERBENCH_VENV_STOCKQ``) and runs it
``--reps`` times.  Then it prints the machine, the medians per system and issue 20's
targets as ratios from this run, each PASS or MISS.

``--baseline-tree DIR`` measures another checkout of stockq (a ``git worktree`` of an
earlier commit) too, alternating with this one rep by rep, as the row
``stockq default (baseline)``; ``--raw FILE`` summarizes an earlier run's raw lines
without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.local_redis import LocalRedis
from bench._peers_env import (
    ARQ_PINS,
    PEER_PINS,
    compile_bytecode,
    default_cache,
    ensure_peer_venv,
    machine,
    tree_venv,
)
from bench._peers_table import STOCKQ, read_raw, table, target_lines, targets, version_lines

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SYSTEMS = "stockq,huey,dramatiq,saq,celery"
BASELINE = " (baseline)"


def default_harness() -> Path:
    env = os.environ.get("STOCKQ_PEERBENCH_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "peerbench"


def _run_harness(harness: Path, env: dict[str, str], out: Path, *, systems: str,
                 scenarios: str, tag: str) -> None:
    cmd = [sys.executable, str(harness / "run_all.py"), "--reps", "1", "--out", str(out),
           "--systems", systems]
    if scenarios:
        cmd += ["--only", scenarios]
    proc = subprocess.Popen(cmd, cwd=harness, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        print(f"  {tag} {line.rstrip()}", flush=True)
    if proc.wait() != 0:
        raise SystemExit(f"run_all.py exited with {proc.returncode}")


def run(args: argparse.Namespace, work: Path) -> list[tuple[Path, str]]:
    """Run the harness ``--reps`` times; returns the raw files and their labels."""
    harness = args.harness.resolve()
    if not (harness / "run_all.py").exists():
        raise SystemExit(f"no peer harness at {harness} (--harness DIR)")
    systems = [s for s in args.systems.split(",") if s]
    peers = [s for s in systems if s != "stockq"]
    env = dict(os.environ, PEERBENCH_VENV_STOCKQ=sys.prefix, PEERBENCH_TMP=str(work))
    env.pop("PYTHONPATH", None)
    if [p for p in peers if p != "arq"]:
        env["PEERBENCH_VENV"] = str(ensure_peer_venv(args.cache, "peers", PEER_PINS))
    if "arq" in peers:
        env["PEERBENCH_VENV_ARQ"] = str(ensure_peer_venv(args.cache, "arq", ARQ_PINS))
    compile_bytecode(ROOT)
    base_env = None
    if args.baseline_tree:
        compile_bytecode(args.baseline_tree.resolve())
        base_env = dict(env, PEERBENCH_VENV_STOCKQ=str(tree_venv(args.cache,
                                                                  args.baseline_tree)))
    raw, raw_base = work / "raw.jsonl", work / "raw-baseline.jsonl"
    with LocalRedis() as server:
        env["PEERBENCH_URL"] = server.url
        if base_env is not None:
            base_env["PEERBENCH_URL"] = server.url
        for rep in range(1, args.reps + 1):
            sides: list[tuple[dict[str, str], Path, str, str]] = [
                (env, raw, ",".join(systems), f"[rep {rep}/{args.reps}]")]
            if base_env is not None and "stockq" in systems:
                base = (base_env, raw_base, "stockq", f"[rep {rep}/{args.reps} baseline]")
                sides.insert(0 if rep % 2 else 1, base)  # alternate which goes first
            for side_env, out, names, tag in sides:
                _run_harness(harness, side_env, out, systems=names,
                             scenarios=args.scenarios, tag=tag)
    return [(raw, ""), (raw_base, BASELINE)]


def report(files: list[tuple[Path, str]], info: dict[str, Any], json_out: Path | None) -> None:
    summary = read_raw(files)
    print()
    print(f"machine: {info['cpu']}, Linux {info['kernel']}, Python {info['python']}, "
          f"redis-server {info['redis_server']}")
    if summary.loads:
        print(f"load average (1 min) at the runs' ends: {min(summary.loads):.2f}–"
              f"{max(summary.loads):.2f}")
    print()
    print("\n".join(table(summary)))
    rows = {label: targets(summary, label) for label in (STOCKQ, STOCKQ + BASELINE)
            if label in summary.systems}
    for label, items in rows.items():
        print(f"\ntargets ({label}; ratios of medians from this run):\n")
        print("\n".join(target_lines(items)))
    print("\nversions:")
    print("\n".join(version_lines(summary)))
    if summary.errors:
        print("\nerrors:")
        print("\n".join(f"- {e}" for e in summary.errors))
    if json_out is not None:
        json_out.write_text(json.dumps({
            "machine": info,
            "systems": {label: {"runs": s.runs, "versions": s.versions}
                        for label, s in summary.systems.items()},
            "targets": {label: [t.__dict__ for t in items] for label, items in rows.items()},
            "errors": summary.errors,
        }, indent=2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    ap.add_argument("--reps", type=int, default=3, help="runs of each scenario (medians)")
    ap.add_argument("--scenarios", default="throughput,latency",
                    help="comma-separated: throughput, latency, timeout, crash")
    ap.add_argument("--systems", default=DEFAULT_SYSTEMS,
                    help="comma-separated: stockq, huey, dramatiq, saq, celery, rq, arq")
    ap.add_argument("--harness", type=Path, default=default_harness(),
                    help="the peer harness's directory (run_all.py)")
    ap.add_argument("--cache", type=Path, default=default_cache(),
                    help="where the peers' venvs are kept")
    ap.add_argument("--baseline-tree", type=Path, default=None,
                    help="another stockq checkout to measure too, alternating")
    ap.add_argument("--raw", type=Path, action="append", default=None,
                    help="summarize these raw files of an earlier run instead of running")
    ap.add_argument("--keep", type=Path, default=None,
                    help="the directory for the raw lines and the workers' logs "
                         "(default: a new one under the cache)")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    args = ap.parse_args(argv)
    info = machine()
    if args.raw:
        report([(p, BASELINE if "baseline" in p.name else "") for p in args.raw], info,
               args.json)
        return 0
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    work = args.keep or args.cache / "runs" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    files = [(p, s) for p, s in run(args, work) if p.exists()]
    print(f"\nrun started {started}; {args.reps} reps of {args.scenarios}; raw lines: "
          + ", ".join(str(p) for p, _ in files))
    report(files, info, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
