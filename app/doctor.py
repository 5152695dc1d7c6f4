"""``stockq doctor``: check what stockq needs and say what to fix.

Each check prints ``ok``, ``warn`` or ``FAIL`` with a one-line finding and, when it is
not ok, the fix.  Exit status 0 when nothing failed (warnings allowed), 1 otherwise.
Checks: settings, who can reach the sidecar (bind address and token), Redis (reachable,
version, persistence), what is alive in the namespace (worker pools, schedulers,
sidecars: app/doctor_live.py), the plugins the workers could not load or cannot run,
tasks that wait for a worker none can be, failures of the last 24 hours, the demo
(``stockq run --demo``: no token needed), ClickHouse (server reachable, or the embedded
engine's directory and who holds it), TuShare (reachable through the proxy when one is
set, token accepted), plugins and schedules."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from app.errors import StockqError
from app.redis_client import create_client, ping
from app.settings import DEMO_NAMESPACE, Settings, load_settings, redact_url

if TYPE_CHECKING:
    from app.doctor_live import Live


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    level: str  # ok | warn | fail
    detail: str
    fix: str = ""


async def check_redis(settings: Settings) -> list[Finding]:
    url = settings.redis_url_redacted
    try:
        client = create_client(settings)
    except StockqError as exc:
        return [Finding("redis", "fail", exc.message, "set STOCKQ_REDIS_ENABLED=true: stockq "
                        "has no other way to queue tasks")]
    try:
        started = time.perf_counter()
        await ping(client, settings)
        latency = (time.perf_counter() - started) * 1000
        info = await client.info("server")
        persistence = await client.info("persistence")
    except StockqError as exc:
        return [Finding("redis", "fail", exc.message,
                        f"start Redis at {url} or point STOCKQ_REDIS_URL at a running one "
                        "(ops/run.sh starts a local one when none is configured)")]
    finally:
        await client.aclose()
    version = str(info.get("redis_version", "?"))
    out = [Finding("redis", "ok", f"{url} answers in {latency:.1f} ms (Redis {version})")]
    major_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if major_minor and major_minor < (6, 2):
        out.append(Finding("redis", "warn", f"Redis {version} is older than 6.2",
                           "upgrade: large executions are created faster with COPY (6.2+)"))
    if not int(persistence.get("aof_enabled", 0)) and \
            not str(persistence.get("rdb_last_save_time", "")):
        out.append(Finding("redis", "warn", "no persistence (AOF off)",
                           "enable appendonly: queued tasks and schedule state live in Redis"))
    elif not int(persistence.get("aof_enabled", 0)):
        out.append(Finding("redis", "warn", "AOF is off: a crash loses the writes since the "
                           "last snapshot", "set appendonly yes in redis.conf"))
    return out


def check_clickhouse(settings: Settings, state: Live | None = None) -> list[Finding]:
    from plugins_bridge.warehouse import Warehouse, is_embedded, warehouse_url

    url = warehouse_url(settings)
    if is_embedded(url):
        path = url.split("://", 1)[1]
        holders = [w for w in (state.workers if state else []) if w.warehouse == url]
        if holders:
            return [Finding("clickhouse", "ok", f"embedded engine at {path}, held by `stockq "
                            f"run` ({holders[0].host} pid {holders[0].pid})")]
        parent = os.path.dirname(path.rstrip("/")) or "/"
        where = path if os.path.isdir(path) else parent
        if not os.access(where, os.W_OK) and os.path.exists(where):
            return [Finding("clickhouse", "fail", f"embedded ClickHouse at {path}: "
                            f"{where} is not writable",
                            "set STOCKQ_DATA_DIR (or STOCKQ_CLICKHOUSE_URL) to a writable place")]
        try:
            import chdb  # noqa: F401
        except ImportError:
            return [Finding("clickhouse", "fail", "the embedded engine (chdb-core) is not "
                            "installed", "pip install chdb-core, or use a ClickHouse server")]
        return [Finding("clickhouse", "ok", f"embedded engine at {path} (opened by `stockq "
                        "run` only; separate roles need STOCKQ_CLICKHOUSE_URL=http://...)")]
    try:
        warehouse = Warehouse(url)
    except StockqError as exc:
        return [Finding("clickhouse", "fail", exc.message,
                        "start ClickHouse or fix STOCKQ_CLICKHOUSE_URL")]
    try:
        version = warehouse.fetch("SELECT version()")["rows"][0][0]
    except StockqError as exc:
        return [Finding("clickhouse", "fail", exc.message, "check the user and database")]
    finally:
        warehouse.close()
    return [Finding("clickhouse", "ok", f"{redact_url(url)} answers (ClickHouse {version})")]


def check_tushare(settings: Settings) -> list[Finding]:
    from plugins_bridge.errors import ConfigurationError, PluginError
    from plugins_bridge.tushare.client import TushareClient

    via = f" through the proxy {redact_url(settings.http_proxy)}" if settings.http_proxy \
        else ""
    if not settings.tushare_token:
        return [Finding("tushare", "warn", "TUSHARE_TOKEN is not set: TuShare tasks fail "
                        "with config_error and the scheduler uses the offline calendar",
                        "set TUSHARE_TOKEN (or run `stockq run --demo` to try it offline)")]
    client = TushareClient(settings.tushare_url, settings.tushare_token,
                           timeout=min(settings.tushare_timeout, 15),
                           proxies=settings.tushare_proxies)
    today = time.strftime("%Y%m%d")
    try:
        with client:
            client.query("trade_cal", {"exchange": "SSE", "start_date": today,
                                       "end_date": today}, "cal_date,is_open")
    except ConfigurationError as exc:
        return [Finding("tushare", "fail", f"{settings.tushare_url}{via}: {exc.message}",
                        "check TUSHARE_TOKEN (and the account's points for the APIs)")]
    except PluginError as exc:
        return [Finding("tushare", "fail", f"{settings.tushare_url}{via}: {exc.message}",
                        "check the network or STOCKQ_HTTP_PROXY, or STOCKQ_TUSHARE_URL")]
    return [Finding("tushare", "ok", f"{settings.tushare_url}{via} answers; the token is "
                    "accepted")]


def check_plugins(settings: Settings) -> list[Finding]:
    from app.scheduler.jobs import build_jobs
    from plugins_bridge.registry import PluginRegistry

    try:
        registry = PluginRegistry.from_settings(settings)
        jobs = build_jobs(settings, registry)
        for job in jobs:
            registry.resolve(job.plugins)
    except StockqError as exc:
        return [Finding("plugins", "fail", exc.message, "fix STOCKQ_PLUGINS or the plugin")]
    names = registry.names()
    out = [Finding("plugins", "ok" if names else "warn",
                   f"{len(names)} plugins: {', '.join(names[:12])}"
                   + (" ..." if len(names) > 12 else ""),
                   "" if names else "set STOCKQ_PLUGINS or STOCKQ_BUILTIN_PLUGINS=true")]
    out += [_unavailable(u) for u in registry.unavailable]
    out.append(Finding("schedules", "ok", "; ".join(
        f"{j.name} '{j.expression}' ({len(j.plugins)} plugins)" for j in jobs)))
    return out


_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")


def _unavailable(entry: dict[str, str]) -> Finding:
    """A plugin (or a whole plugin source) found but not loaded: fail when none of the
    source's plugins loaded, warn for one module."""
    name, reason, source = entry["name"], entry["reason"], entry["source"]
    whole = name in (source, f"{source}.core.plugin_manager")
    missing = _MISSING_MODULE.search(reason)
    if missing:
        fix = f"install {missing.group(1).split('.')[0]} into stockq's environment"
    elif "token" in reason.lower():
        fix = "set TUSHARE_TOKEN: the package cannot be imported without it"
    else:
        fix = f"see the error of {name}"
    what = f"none of the {source} plugins loaded" if whole else f"{name} was not loaded"
    return Finding("plugins", "fail" if whole else "warn", f"{what}: {reason}", fix)


def check_api(settings: Settings) -> list[Finding]:
    """Who can reach the sidecar that ``stockq api`` / ``stockq run`` would start."""
    from app.api.security import exposed, is_loopback, token_problem

    where = f"{settings.api_host or 'every interface'}:{settings.api_port}"
    token = settings.api_token
    problem = token_problem(token) if token else None
    if problem:
        return [Finding("api", "fail", f"{problem} (`stockq api` and `stockq run` refuse to "
                        "start)", "set STOCKQ_API_TOKEN to the output of "
                        "`openssl rand -hex 32`")]
    out: list[Finding] = []
    if exposed(settings.api_host, token):
        out.append(Finding(
            "api", "warn", f"the sidecar would listen on {where}, beyond loopback, without "
            "STOCKQ_API_TOKEN: it starts only with --insecure-no-auth, and then anyone who "
            "reaches the port can submit, cancel and retry tasks",
            "set STOCKQ_API_TOKEN (`openssl rand -hex 32`), or STOCKQ_API_HOST=127.0.0.1"))
    elif is_loopback(settings.api_host):
        out.append(Finding("api", "ok", f"the sidecar listens on {where} (this machine only)"
                           + ("; a bearer token is required" if token else "")))
    else:
        out.append(Finding("api", "ok", f"the sidecar listens on {where} and requires the "
                           "bearer token of STOCKQ_API_TOKEN"))
    if "*" in settings.api_cors_origins and not token:
        out.append(Finding("api", "warn", "STOCKQ_API_CORS_ORIGINS=* without a token: any web "
                           "page open in a browser on a machine that reaches the sidecar can "
                           "submit and cancel tasks", "list the origins that may call the API, "
                           "or set STOCKQ_API_TOKEN"))
    return out


async def check_live(settings: Settings) -> tuple[list[Finding], Live | None]:
    """The namespace's live state (app/doctor_live.py): roles, what the workers run and
    could not load, tasks nobody can run, recent failures, the demo."""
    from app.doctor_live import (
        demo_elsewhere,
        failures,
        read_live,
        roles,
        waiting,
        worker_plugins,
    )
    from app.queue import TaskQueue

    client = create_client(settings)
    try:
        async with TaskQueue(client, settings) as queue:
            state = await read_live(queue)
            pending = int(await client.zcard(queue.keys.status_index("pending")))
            rows = [*roles(state, settings.namespace, pending), *worker_plugins(state),
                    *await waiting(queue, state), *await failures(queue)]
            if state.demo:
                rows.append(("demo", "ok", f"namespace {settings.namespace!r} is the demo's "
                             "(`stockq run --demo`): TuShare is the bundled fake server, "
                             "its data stays in its own directory", ""))
            elif settings.namespace != DEMO_NAMESPACE and await demo_elsewhere(queue):
                rows.append(("demo", "ok", "a demo daemon (`stockq run --demo`) runs on this "
                             f"Redis in namespace {DEMO_NAMESPACE!r}, apart from this one",
                             f"`stockq --namespace {DEMO_NAMESPACE} doctor` checks it"))
    except StockqError as exc:
        return [Finding("workers", "fail", exc.message, "")], None
    finally:
        await client.aclose()
    return [Finding(*row) for row in rows], state


def check_demo_warehouse(state: Live) -> list[Finding]:
    held = [w for w in state.workers if w.warehouse]
    where = held[0].warehouse if held else "its data directory"
    return [Finding("clickhouse", "ok", f"the demo's embedded engine at {where} (held by "
                    f"`stockq run --demo`, pid {held[0].pid if held else '?'})")]


async def run_checks(settings: Settings) -> list[Finding]:
    findings = [Finding("settings", "ok", f"namespace {settings.namespace!r}, time zone "
                        f"{settings.timezone}, data directory {settings.data_dir}")]
    findings += check_api(settings)
    redis_findings = await check_redis(settings)
    findings += redis_findings
    state = None
    if not any(f.level == "fail" for f in redis_findings):
        live_findings, state = await check_live(settings)
        findings += live_findings
    if state is not None and state.demo:
        findings += check_demo_warehouse(state)
        findings.append(Finding("tushare", "ok", "the demo uses the bundled fake TuShare "
                                "server: no token needed"))
    else:
        findings += await asyncio.to_thread(check_clickhouse, settings, state)
        findings += await asyncio.to_thread(check_tushare, settings)
    findings += check_plugins(settings)
    return findings


def cmd_doctor(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except StockqError as exc:
        findings = [Finding("settings", "fail", exc.message, "fix the variable it names")]
    else:
        findings = asyncio.run(run_checks(settings))
    if args.json:
        print(json.dumps([asdict(f) for f in findings], ensure_ascii=False, indent=2))
    else:
        for f in findings:
            label = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[f.level]
            print(f"{label}  {f.check:<10} {f.detail}")
            if f.fix:
                print(f"      {'':<10} fix: {f.fix}")
    return 1 if any(f.level == "fail" for f in findings) else 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("doctor", help="check Redis, ClickHouse, TuShare and the plugins")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(sync_func=cmd_doctor)
