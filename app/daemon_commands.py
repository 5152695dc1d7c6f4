"""The long-running commands: ``stockq worker``, ``stockq api`` and ``stockq run``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from typing import Any

from app.logs import configure_logging
from app.settings import Settings, load_settings


def cmd_worker(args: argparse.Namespace) -> int:
    from app import entry
    from app.environment import child_environment
    from app.worker.forkserver_launch import launch
    from app.worker.procs import new_worker_id

    settings = load_settings()
    # the fork server loads the plugins while this process imports the rest: started
    # by the console script before app.cli was imported (app/entry.py), or now
    early = entry.take()
    if early is not None:
        worker_id, forks = early
    else:
        worker_id = new_worker_id()
        forks = launch(child_environment(), worker_id)

    from app.worker.main import run_worker
    from app.worker.supervisor import PoolOptions

    configure_logging(settings)
    options = PoolOptions(shutdown_grace=args.shutdown_grace)
    if args.concurrency is not None:
        options.concurrency = args.concurrency
    if args.max_tasks_per_child is not None:
        options.max_tasks_per_child = args.max_tasks_per_child
    if args.queue:
        options.queues = tuple(dict.fromkeys(args.queue))
    return asyncio.run(run_worker(settings, options, wait=args.wait_for_redis,
                                  worker_id=worker_id, forks=forks))


def _checked_host(args: argparse.Namespace, settings: Settings) -> str:
    """The sidecar's bind address, once it is known to be allowed (ConfigError, exit 5,
    before anything starts: beyond loopback only with a token or --insecure-no-auth; a
    token must be a real secret)."""
    from app.api.security import check_exposure

    host: str = settings.api_host if args.host is None else args.host
    check_exposure(host, settings.api_token, insecure_no_auth=args.insecure_no_auth)
    return host


def cmd_api(args: argparse.Namespace) -> int:
    from app.daemon import serve_api

    settings = load_settings()
    host = _checked_host(args, settings)
    configure_logging(settings)
    return asyncio.run(serve_api(settings, host, args.port or settings.api_port,
                                 insecure_no_auth=args.insecure_no_auth))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _queue_name(text: str) -> str:
    from app.errors import InvalidInput
    from app.models import parse_queue_name

    try:
        return parse_queue_name(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < 86400 * 7:
        raise argparse.ArgumentTypeError("must be between 0 and a week")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    """The all-in-one daemon: the HTTP sidecar, the scheduler and a worker pool in one
    process."""
    from app.daemon import run_all
    from app.worker.supervisor import PoolOptions

    settings = load_settings()
    host = settings.api_host if args.no_api else _checked_host(args, settings)
    configure_logging(settings)
    _check_warehouse_free(dataclasses.replace(
        settings, data_dir=settings.data_dir / "demo", clickhouse_url="")
        if args.demo else settings)
    fake = None
    if args.demo:
        settings, fake = _start_demo(settings)
    parts = [*([] if args.no_api else ["the sidecar"]),
             *([] if args.no_scheduler else ["the scheduler"]), "a worker pool"]
    print(f"stockq run: starting {', '.join(parts)}", file=sys.stderr)
    options = PoolOptions()
    if args.workers is not None:
        options.concurrency = args.workers
    try:
        return asyncio.run(run_all(settings, options, api=not args.no_api,
                                   scheduler=not args.no_scheduler,
                                   host=host, port=args.port or settings.api_port,
                                   insecure_no_auth=args.insecure_no_auth))
    finally:
        if fake is not None:
            fake.stop()


def _check_warehouse_free(settings: Settings) -> None:
    """Before anything starts: a second `stockq run` on the same data directory gets one
    line naming the process that holds the embedded ClickHouse (exit 5)."""
    from plugins_bridge.warehouse import check_not_held, is_embedded, warehouse_url

    url = warehouse_url(settings)
    if is_embedded(url):
        check_not_held(url.split("://", 1)[1])


EXAMPLE_PLUGINS = "plugins_bridge.examples:EXAMPLES"
DEMO_PLUGINS = "plugins_bridge.demo:DEMO"  # demo_long_backfill: a long task to cancel


def _start_demo(settings: Settings) -> tuple[Settings, Any]:
    """``--demo``: a world of its own.  TuShare is the bundled fake server
    (deterministic data, any date) in a thread of this process; the namespace is
    ``demo`` (its own queues, schedules and workers in this Redis) and the data
    directory ``STOCKQ_DATA_DIR/demo`` (its own embedded ClickHouse, whatever
    STOCKQ_CLICKHOUSE_URL says); the example plugins (noop, sleep, fail) are loaded too,
    and demo_long_backfill (plugins_bridge/demo.py), a long task to watch and cancel.
    Worker children inherit all of it through the environment."""
    import os

    from app.settings import DEMO_NAMESPACE
    from plugins_bridge.tushare.fake_server import FakeTushare

    fake = FakeTushare()
    fake.start()
    data_dir = settings.data_dir / "demo"
    plugins = tuple(dict.fromkeys((*settings.plugins, EXAMPLE_PLUGINS, DEMO_PLUGINS)))
    token = fake.token or "demo-token"
    os.environ.update(STOCKQ_TUSHARE_URL=fake.url, TUSHARE_TOKEN=token,
                      STOCKQ_NAMESPACE=DEMO_NAMESPACE, STOCKQ_DATA_DIR=str(data_dir),
                      STOCKQ_PLUGINS=",".join(plugins))
    for name in ("STOCKQ_TUSHARE_TOKEN", "STOCKQ_KEY_PREFIX", "STOCKQ_CLICKHOUSE_URL",
                 "STOCKQ_CLICKHOUSE_QUERY_URL"):
        os.environ.pop(name, None)
    ignored = " (STOCKQ_CLICKHOUSE_URL is not used by the demo)" \
        if settings.clickhouse_url else ""
    print(f"stockq run --demo: namespace {DEMO_NAMESPACE!r}, data in {data_dir}{ignored}; "
          f"TuShare is the bundled fake server at {fake.url}; see its tasks with "
          f"`stockq --namespace {DEMO_NAMESPACE} tasks`", file=sys.stderr)
    return dataclasses.replace(settings, tushare_url=fake.url, tushare_token=token,
                               key_prefix=DEMO_NAMESPACE, data_dir=data_dir,
                               clickhouse_url="", clickhouse_query_url="",
                               plugins=plugins, demo=True), fake


def cmd_audit_flush(args: argparse.Namespace) -> int:
    """``stockq audit-flush``: only the audit flusher (one is active per Redis)."""
    from app.audit import run_flusher
    from app.errors import ConfigError
    from app.queue import TaskQueue
    from app.redis_client import create_client
    from app.worker.main import wait_for_redis
    from plugins_bridge.warehouse import open_warehouse

    settings = load_settings()
    configure_logging(settings)
    warehouse = open_warehouse(settings, embedded_allowed=False)
    if warehouse is None:
        raise ConfigError("stockq audit-flush needs a ClickHouse server: set "
                          "STOCKQ_CLICKHOUSE_URL=http://host:8123 (the embedded engine is "
                          "flushed by `stockq run` itself)")

    async def main() -> int:
        await wait_for_redis(settings, wait=args.wait_for_redis)
        client = create_client(settings)
        try:
            async with TaskQueue(client, settings) as queue:
                return await run_flusher(queue, warehouse)
        finally:
            await client.aclose()

    try:
        return asyncio.run(main())
    finally:
        warehouse.close()


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("audit-flush", help="move the audit outbox to ClickHouse (alone)")
    p.add_argument("--wait-for-redis", action="store_true",
                   help="wait for Redis at start instead of exiting")
    p.set_defaults(sync_func=cmd_audit_flush)

    p = sub.add_parser("worker", help="run a worker pool (supervisor + child processes)")
    p.add_argument("--concurrency", type=_positive_int, help="children (default: CPU count)")
    p.add_argument("--max-tasks-per-child", type=_positive_int,
                   help="recycle a child after this many tasks (default 10000)")
    p.add_argument("--shutdown-grace", type=_seconds, default=30.0,
                   help="seconds running tasks get to finish after SIGTERM (default 30)")
    p.add_argument("--wait-for-redis", action="store_true",
                   help="wait for Redis at start instead of exiting")
    p.add_argument("--queue", action="append", type=_queue_name, metavar="NAME",
                   help="serve this named queue (repeat; default: the queue 'default')")
    p.set_defaults(sync_func=cmd_worker)

    p = sub.add_parser("api", help="run the HTTP sidecar")
    p.add_argument("--host", help="bind address (default STOCKQ_API_HOST or 127.0.0.1)")
    p.add_argument("--port", type=_positive_int, help="port (default STOCKQ_API_PORT or 8080)")
    _insecure_flag(p)
    p.set_defaults(sync_func=cmd_api)

    p = sub.add_parser("run", help="run the all-in-one daemon (sidecar, scheduler, worker pool)")
    p.add_argument("--workers", type=_positive_int, help="worker children (default: CPU count)")
    p.add_argument("--host", help="sidecar bind address (default STOCKQ_API_HOST or 127.0.0.1)")
    p.add_argument("--port", type=_positive_int, help="sidecar port (default 8080)")
    p.add_argument("--no-api", action="store_true", help="run without the HTTP sidecar")
    p.add_argument("--no-scheduler", action="store_true", help="run without the scheduler")
    p.add_argument("--demo", action="store_true",
                   help="use the bundled fake TuShare server (offline, deterministic data)")
    _insecure_flag(p)
    p.set_defaults(sync_func=cmd_run)


def _insecure_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="let the sidecar listen beyond loopback without STOCKQ_API_TOKEN "
                        "(anyone who reaches the port can submit and cancel tasks)")
