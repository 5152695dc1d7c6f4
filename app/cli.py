"""The ``stockq`` command line: the parser, the examples, the dispatch.

Exit codes: 0 success; 1 the operation did not succeed (e.g. the task cannot be
cancelled, or ``run`` found parts missing); 2 bad arguments or input; 3 Redis
unavailable; 4 not found; 5 configuration error.  The commands live with what they
use: app/cli_tasks.py (submit, status, cancel, retry, tasks, stats), app/cli_admin.py
(workers, executions), app/daemon_commands.py, app/scheduler/commands.py,
app/query_command.py, app/doctor.py, app/purge.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from app.errors import (
    ConfigError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    RedisUnavailable,
    StockqError,
)
from app.logs import configure_logging
from app.settings import Settings, load_settings, use_namespace

if TYPE_CHECKING:
    from app.cli_tasks import Command

EXIT_FAILED, EXIT_USAGE, EXIT_REDIS, EXIT_NOT_FOUND, EXIT_CONFIG = 1, 2, 3, 4, 5

DESCRIPTION = """\
stockq keeps a ClickHouse warehouse of TuShare market data up to date: a Redis
task queue, worker pools that run the data plugins, a scheduler for the daily
syncs and an HTTP sidecar."""
EXIT_CODES = """\
exit codes: 0 done; 1 not possible now (e.g. cancelling a completed task);
2 bad arguments; 3 Redis unreachable; 4 not found; 5 configuration error

example:
  stockq run --demo     # try it offline; then, in another shell:
  stockq --namespace demo tasks"""

# The example every command's help ends with (the test of the help checks each one).
EXAMPLES: dict[str, str] = {
    "submit": "stockq submit tushare_daily --date 20261204 --wait",
    "status": "stockq status 3f2a1b9c-0d4e-4f5a-9b6c-7d8e9f0a1b2c",
    "cancel": "stockq cancel 3f2a1b9c-0d4e-4f5a-9b6c-7d8e9f0a1b2c",
    "retry": "stockq retry 3f2a1b9c-0d4e-4f5a-9b6c-7d8e9f0a1b2c --from-start",
    "tasks": "stockq tasks --status failed --limit 20",
    "stats": "stockq stats --json",
    "workers": "stockq workers",
    "executions": "stockq executions list --status failed",
    "executions list": "stockq executions list --trigger scheduled --limit 5",
    "executions show": "stockq executions show 5d0f5b8e-6a39-4c8e-9b3a-2f4f5e6b7c81",
    "executions retry": "stockq executions retry 5d0f5b8e-6a39-4c8e-9b3a-2f4f5e6b7c81",
    "executions cancel": "stockq executions cancel 5d0f5b8e-6a39-4c8e-9b3a-2f4f5e6b7c81",
    "worker": "stockq worker --concurrency 4 --queue default --queue heavy",
    "api": "stockq api --host 127.0.0.1 --port 8080",
    "run": "stockq run --demo",
    "audit-flush": "stockq audit-flush --wait-for-redis",
    "scheduler": "stockq scheduler",
    "schedule": "stockq schedule run daily_sync",
    "schedule list": "stockq schedule list --json",
    "schedule run": "stockq schedule run daily_sync",
    "query": 'stockq query "SELECT trade_date, count() FROM ods_daily FINAL GROUP BY '
             'trade_date"',
    "history": "stockq history --status failed --since 2026-12-01",
    "doctor": "stockq --namespace demo doctor",
    "purge": "stockq purge queue default --yes",
}


def _exit_code(err: StockqError) -> int:
    if isinstance(err, RedisUnavailable):
        return EXIT_REDIS
    if isinstance(err, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(err, InvalidInput):
        return EXIT_USAGE
    if isinstance(err, ConfigError):
        return EXIT_CONFIG
    return EXIT_FAILED


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stockq")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """``--version``: the installed version, looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser._print_message(f"stockq {_version()}\n", sys.stdout)
        parser.exit()


def _commands(parser: argparse.ArgumentParser, prefix: str = ""
              ) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command parser under ``parser``, as ``("schedule run", parser)``."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                path = f"{prefix} {name}".strip()
                out.append((path, child))
                out += _commands(child, path)
    return out


def build_parser(*, worker_only: bool = False) -> argparse.ArgumentParser:
    """The command line's parser; ``worker_only``: with the long-running commands'
    parsers alone (app/daemon_commands.py), for a ``stockq worker`` run, whose start-up
    then does not import the other commands' modules (app/entry.py)."""
    from app.daemon_commands import add_parsers as add_daemon_parsers

    parser = argparse.ArgumentParser(prog="stockq", description=DESCRIPTION, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what a one-shot command does on stderr (-vv: debug); "
                             "long-running commands always log")
    parser.add_argument("--namespace", metavar="NAME",
                        help="the key namespace to work in (default STOCKQ_NAMESPACE, else "
                             "'stock'; `stockq run --demo` uses 'demo')")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="`stockq COMMAND --help` says more")
    if worker_only:
        add_daemon_parsers(sub)
    else:
        from app.cli_admin import add_parsers as add_admin_parsers
        from app.cli_tasks import add_parsers as add_task_parsers
        from app.doctor import add_parser as add_doctor_parser
        from app.purge import add_parser as add_purge_parser
        from app.query_command import add_parser as add_query_parser
        from app.scheduler.commands import add_parsers as add_schedule_parsers

        add_task_parsers(sub)
        add_admin_parsers(sub)
        add_daemon_parsers(sub)
        add_schedule_parsers(sub)
        add_query_parser(sub)
        add_doctor_parser(sub)
        add_purge_parser(sub)
    for path, child in _commands(parser):
        child.formatter_class = argparse.RawDescriptionHelpFormatter
        if path in EXAMPLES and not child.epilog:
            child.epilog = f"example:\n  {EXAMPLES[path]}"
    return parser


async def _run_async(func: Command, args: argparse.Namespace, settings: Settings) -> int:
    from app.queue import TaskQueue
    from app.redis_client import create_client

    client = create_client(settings)
    try:
        async with TaskQueue(client, settings) as queue:
            return await func(args, settings, queue)
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    from app.entry import runs_worker

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(worker_only=runs_worker(argv)).parse_args(argv)
    try:
        if args.namespace is not None:
            use_namespace(args.namespace)
        if args.verbose:  # one-shot commands log nothing without it
            base = load_settings()
            configure_logging(replace(base, log_level="debug" if args.verbose > 1
                                      else base.log_level))
        if getattr(args, "sync_func", None):
            return int(args.sync_func(args))
        settings = load_settings()
        return asyncio.run(_run_async(args.func, args, settings))
    except StockqError as err:
        print(f"stockq: {err.message}", file=sys.stderr)
        if isinstance(err, IllegalTransition):
            return EXIT_FAILED
        return _exit_code(err)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
