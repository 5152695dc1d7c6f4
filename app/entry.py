"""The ``stockq`` console script: starts a worker's fork server before anything else.

``stockq worker`` needs two things before it can run its first task: the supervisor
(the command line, asyncio, the Redis client, the queue) and children with the
plugins loaded.  This module imports almost nothing; for ``stockq [--namespace NAME]
worker ...`` it starts the pool's fork server (app/worker/forkserver.py) first, so the
plugins load in that process while this one imports the rest (app/cli.py), then the
worker command takes it over (:func:`take`).  Any other command goes straight to
app/cli.py.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # (``typing`` is not imported before the launch)
if TYPE_CHECKING:
    from app.worker.forkserver_launch import Launched

_early: tuple[str, Launched] | None = None


def _worker_namespace(argv: list[str]) -> tuple[bool, str | None]:
    """Whether ``argv`` runs ``stockq worker`` (global options first), and the
    ``--namespace`` it names; help and version requests are not runs."""
    namespace = None
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option == "--namespace" and rest:
            namespace = rest.pop(0)
        elif option.startswith("--namespace="):
            namespace = option.split("=", 1)[1]
        elif option not in ("-v", "-vv", "--verbose"):
            return False, None  # --help, --version, anything unknown: argparse decides
    worker = bool(rest) and rest[0] == "worker" and not {"-h", "--help"} & set(rest)
    return worker, namespace


def runs_worker(argv: list[str]) -> bool:
    """Whether ``argv`` runs ``stockq worker`` (not its help)."""
    return _worker_namespace(argv)[0]


def start_early(argv: list[str]) -> None:
    """Start the fork server of ``stockq worker`` (if ``argv`` runs one)."""
    global _early
    worker, namespace = _worker_namespace(argv)
    if not worker:
        return
    from app.environment import child_environment, set_namespace
    from app.worker.forkserver_launch import launch
    from app.worker.procs import new_worker_id

    env = child_environment()
    if namespace is not None:
        # (an invalid name ends the command before the server matters: it dies with us)
        set_namespace(env, namespace)
    worker_id = new_worker_id()
    _early = worker_id, launch(env, worker_id)


def take() -> tuple[str, Launched] | None:
    """The fork server started early and the pool id it was started for (once)."""
    global _early
    early, _early = _early, None
    return early


def main() -> int:
    start_early(sys.argv[1:])
    from app.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
