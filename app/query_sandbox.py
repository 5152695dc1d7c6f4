"""``POST /api/v1/query``: an operator's read-only statement, in a session of its own.

A statement is never run as it was sent.  In one of a few ClickHouse sessions kept for
this path (``STOCKQ_QUERY_CONCURRENCY``, default 2):

1. the engine parses it and writes the parse back as text (``formatQueryFromJSON`` of
   ``parseQueryToJSON``): comments go, quoting becomes canonical, one statement only;
2. the engine parses that canonical text again, and :func:`app.sql_policy.check` walks
   the JSON tree: known statements, the warehouse's own tables, computing functions
   only, no table function, ``INTO OUTFILE``, ``FORMAT`` or ``SETTINGS``;
3. the canonical text runs, in the same session.

The session itself is the second lock: its limits are set first and then
``readonly=1``, after which ClickHouse refuses any change of setting (a ``SETTINGS``
clause, ``SET``) and any table function.  With ``STOCKQ_CLICKHOUSE_QUERY_URL`` (a
server user whose profile has ``readonly=1`` and the limits) the sessions use that user,
and the sandbox refuses to run unless the server reports it read-only and limited.

Each statement has a deadline on this side too (``STOCKQ_QUERY_TIMEOUT`` plus
:data:`DEADLINE_MARGIN`, waiting for a free session included): past it the statement is
killed (``KILL QUERY`` from a control session) and the caller gets ``query_timeout``.
The sessions are not the warehouse's own: a long query never holds up loads, the audit
flusher or ``/health``.  :meth:`QuerySandbox.aclose` kills what still runs, so a
shutdown is never held by a query.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from app.errors import (
    ConfigError,
    QueryBusy,
    QueryError,
    QueryTimeout,
    ReadOnlyViolation,
    StockqError,
    WarehouseUnavailable,
)
from app.logs import get_logger
from app.settings import Settings, redact_url
from app.sql_policy import Catalogue, Policy, check, check_canonical
from plugins_bridge.warehouse import is_embedded, jsonable, short_error

log = get_logger("stockq.query")

T = TypeVar("T")

DEADLINE_MARGIN = 2.0  # seconds past the engine's own limit before this side kills it
KILL_WAIT = 5.0  # how long a shutdown waits for killed statements to end
MEMORY_LIMIT = 2 * 1024**3  # bytes one statement may use
PARSER_DEPTH = 200  # keeps the JSON tree well inside Python's recursion limit

_PARSE = ("SELECT parseQueryToJSON(t), t FROM "
          "(SELECT formatQueryFromJSON(parseQueryToJSON({q:String})) AS t)")
_FORMAT = "SELECT formatQuerySingleLine({q:String})"
_CATALOGUE = ("SELECT name, case_insensitive, alias_to, categories, is_aggregate, origin "
              "FROM system.functions")
_COMBINATORS = "SELECT name FROM system.aggregate_function_combinators"
_LIMITS = ("SELECT getSetting('readonly'), getSetting('max_execution_time'), "
           "getSetting('max_result_rows'), currentDatabase()")
_NO_JSON = "does not support JSON serialization"
_CODE = re.compile(r"Code: (\d+)\.")
_SCOPE = re.compile(r":? In scope SELECT (?:parseQueryToJSON|formatQuery\w*)\(.*", re.DOTALL)
_VERSION = re.compile(r" \(version [\d.]+\)")
_NAME = re.compile(r"\(([A-Z_]+)\)\s*$")


def session_settings(settings: Settings, engine_timeout: float) -> dict[str, Any]:
    """What a sandbox session sets before it locks itself (``readonly`` last)."""
    return {
        "max_result_rows": settings.query_max_rows,
        "max_result_bytes": settings.query_max_bytes,
        "result_overflow_mode": "throw",
        "max_execution_time": engine_timeout,
        "timeout_overflow_mode": "throw",
        "max_memory_usage": MEMORY_LIMIT,
        "max_threads": max(1, (os.cpu_count() or 2) // 2),
        "max_parser_depth": PARSER_DEPTH,
        "readonly": 1,
    }


class _Session:
    """One ClickHouse session of the sandbox: its own client, used from its own
    thread, one statement at a time."""

    def __init__(self, url: str, locks: dict[str, Any] | None, marker: str,
                 http_timeout: float) -> None:
        self.url = url
        self.marker = marker  # the session's log_comment (embedded): what a kill names
        self.locks = locks  # None: the server's profile locks it
        self.http_timeout = http_timeout
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="clickhouse-query")
        self.client: Any = None
        self.query_id = ""
        self.broken = False
        self.database = ""

    def open(self) -> None:
        import clickhouse_connect

        options: dict[str, Any] = {}
        if not is_embedded(self.url):
            options = {"connect_timeout": 5, "send_receive_timeout": self.http_timeout}
        locks = None if self.locks is None else {**self.locks}
        if locks is not None and is_embedded(self.url):
            locks = {k: v for k, v in locks.items() if k != "readonly"}
            locks.update(log_comment=self.marker, readonly=1)  # readonly stays last
        try:
            self.client = clickhouse_connect.get_client(dsn=self.url, settings=locks or {},
                                                        **options)
            readonly, seconds, rows, database = self.client.query(_LIMITS).result_rows[0]
        except Exception as exc:
            raise WarehouseUnavailable(f"ClickHouse at {redact_url(self.url)} cannot be "
                                       f"opened for queries: {short_error(exc)}") from None
        self.database = str(database)
        if int(readonly) != 1 or not float(seconds) or not int(rows):
            self.close()
            raise ConfigError(
                f"the query user of {redact_url(self.url)} is not locked: its profile must "
                "set readonly=1, max_execution_time and max_result_rows (it reports "
                f"readonly={readonly}, max_execution_time={seconds}, "
                f"max_result_rows={rows}); see docs/operations.md, Security")

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # closing is best effort
                pass
            self.client = None


class QuerySandbox:
    """The sessions of ``POST /api/v1/query`` for one warehouse."""

    def __init__(self, warehouse_url: str, settings: Settings, *,
                 engine_timeout: float | None = None) -> None:
        self.warehouse_url = warehouse_url
        self.url = settings.clickhouse_query_url or warehouse_url
        self.embedded = is_embedded(self.url)
        self.max_rows = settings.query_max_rows
        self.timeout = settings.query_timeout
        self.size = settings.query_concurrency
        # tests set the engine's own limit above the deadline to exercise the kill
        engine = self.timeout if engine_timeout is None else engine_timeout
        self._locks = None if settings.clickhouse_query_url else \
            session_settings(settings, engine)
        self._prefix = f"stockq-query-{uuid.uuid4().hex[:12]}"
        self._count = 0
        self._slots = asyncio.Semaphore(self.size)
        self._idle: list[_Session] = []
        self._running: dict[_Session, asyncio.Future[Any]] = {}
        self._sessions: set[_Session] = set()
        self._policy: Policy | None = None
        self._policy_lock = threading.Lock()
        self._control: Any = None
        self._control_lock = threading.Lock()
        self._control_executor = ThreadPoolExecutor(1, thread_name_prefix="clickhouse-kill")
        self._closed = False

    @property
    def running(self) -> int:
        return len(self._running)

    # ------------------------------------------------------------------ the path
    async def run(self, sql: str, max_rows: int | None = None) -> dict[str, Any]:
        """Check and run one statement: ``{"columns", "types", "rows"}``."""
        if self._closed:
            raise QueryBusy("the sidecar is stopping; no new queries")
        limit = min(max_rows or self.max_rows, self.max_rows)
        loop = asyncio.get_running_loop()
        budget = self.timeout + DEADLINE_MARGIN
        deadline = loop.time() + budget
        try:
            await asyncio.wait_for(self._slots.acquire(), budget)
        except TimeoutError:
            raise QueryBusy(f"all {self.size} query sessions stayed busy for {budget:g} s "
                            "(STOCKQ_QUERY_CONCURRENCY); try again later") from None
        session = self._idle.pop() if self._idle else self._new_session()
        future = loop.run_in_executor(session.executor, self._execute, session, sql, limit)
        self._running[session] = future
        future.add_done_callback(lambda _: self._release(session))
        try:
            return await asyncio.wait_for(asyncio.shield(future),
                                          max(0.0, deadline - loop.time()))
        except TimeoutError:
            session.broken = True
            await self._kill([session])
            log.warning("query.killed", reason="deadline", seconds=budget)
            raise QueryTimeout(f"the query ran past its deadline ({budget:g} s, "
                               "STOCKQ_QUERY_TIMEOUT) and was stopped") from None

    def _new_session(self) -> _Session:
        self._count += 1
        session = _Session(self.url, self._locks, f"{self._prefix}-{self._count}",
                           self.timeout + DEADLINE_MARGIN + 5)
        self._sessions.add(session)
        return session

    def _release(self, session: _Session) -> None:
        self._running.pop(session, None)
        if session.broken and not self._closed:
            self._sessions.discard(session)
            session.executor.submit(session.close)
            session.executor.shutdown(wait=False)
        else:
            self._idle.append(session)
        self._slots.release()

    def _execute(self, session: _Session, sql: str, limit: int) -> dict[str, Any]:
        """On the session's thread: open it if new, check, run."""
        if session.client is None:
            session.open()
        policy = self._policy or self._load_policy(session)
        tree, text = self._parse(session, sql)
        if tree is None:
            check_canonical(text, policy)
        else:
            check(tree, policy)
        session.query_id = uuid.uuid4().hex
        try:
            result = session.client.query(text, settings={"query_id": session.query_id})
        except Exception as exc:
            session.broken = True  # a failed statement may leave its stream behind
            raise self._engine_error(exc) from None
        if len(result.result_rows) > limit:
            raise QueryError(f"the result has more than {limit} rows (max_rows); narrow the "
                             "query or add a LIMIT")
        return {"columns": list(result.column_names),
                "types": [t.name for t in result.column_types],
                "rows": [[jsonable(v) for v in row] for row in result.result_rows]}

    def _parse(self, session: _Session, sql: str) -> tuple[Any, str]:
        """(the JSON tree of the canonical text, that text); (None, the engine's
        single-line formatting) for statements it cannot write as JSON."""
        client = session.client
        try:
            tree, text = client.query(_PARSE, parameters={"q": sql}).result_rows[0]
            return json.loads(tree), str(text)
        except RecursionError:
            raise ReadOnlyViolation("the statement is nested too deeply") from None
        except Exception as exc:
            if _NO_JSON not in str(exc):
                session.broken = True
                raise self._engine_error(exc) from None
        try:
            return None, str(client.query(_FORMAT, parameters={"q": sql}).result_rows[0][0])
        except Exception as exc:
            session.broken = True
            raise self._engine_error(exc) from None

    def _load_policy(self, session: _Session) -> Policy:
        """The function catalogue, read once by the control session (a locked session
        may not return 2,000 rows)."""
        with self._policy_lock:
            if self._policy is None:
                try:
                    control = self._control_client()
                    rows = control.query(_CATALOGUE).result_rows
                    combinators = [r[0] for r in control.query(_COMBINATORS).result_rows]
                except Exception as exc:
                    raise WarehouseUnavailable(
                        "the query path needs ClickHouse's parseQueryToJSON and the function "
                        f"catalogue (ClickHouse 26.8 or newer): {short_error(exc)}") from None
                self._policy = Policy(session.database,
                                      Catalogue.from_rows(rows, combinators))
            return self._policy

    def _engine_error(self, exc: BaseException) -> StockqError:
        message = _clean(short_error(exc))
        code = _CODE.search(message)
        number = int(code.group(1)) if code else 0
        if number == 159:  # TIMEOUT_EXCEEDED
            return QueryTimeout(f"the query ran past STOCKQ_QUERY_TIMEOUT ({self.timeout:g} s)"
                                f" and was stopped: {message}")
        if number == 394:  # QUERY_WAS_CANCELLED: its deadline, or a shutdown
            return QueryTimeout("the query was stopped (its deadline passed, or the sidecar "
                                "is stopping)")
        if number == 164:  # READONLY
            return ReadOnlyViolation(f"ClickHouse refused it in read-only mode: {message}")
        if "Multi-statements are not allowed" in message:
            return ReadOnlyViolation("one statement at a time: remove the ';' between "
                                     "statements")
        if not code and not self.embedded:
            return WarehouseUnavailable(f"ClickHouse at {redact_url(self.url)} did not "
                                        f"answer: {message}")
        return QueryError(f"ClickHouse: {message}")

    # ------------------------------------------------------------------ kills, shutdown
    async def _kill(self, sessions: list[_Session]) -> None:
        """``KILL QUERY`` the statements of ``sessions``, from a session that is not
        read-only (the warehouse's own user)."""
        if self.embedded:
            names = ", ".join(f"'{s.marker}'" for s in sessions)
            where = f"Settings['log_comment'] IN ({names})"
        else:
            names = ", ".join(f"'{s.query_id}'" for s in sessions if s.query_id)
            if not names:
                return
            where = f"query_id IN ({names})"
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(
                self._control_executor, self._control_command,
                f"KILL QUERY WHERE {where} ASYNC"), KILL_WAIT)
        except (TimeoutError, StockqError) as exc:
            log.warning("query.kill_failed", error=getattr(exc, "message", "no answer"))

    def _control_client(self) -> Any:
        """The session that kills statements and reads the catalogue: the warehouse's
        own user, never an operator's statement."""
        with self._control_lock:
            if self._control is None:
                import clickhouse_connect

                try:
                    self._control = clickhouse_connect.get_client(dsn=self.warehouse_url)
                except Exception as exc:
                    raise WarehouseUnavailable(short_error(exc)) from None
            return self._control

    def _control_command(self, sql: str) -> None:
        try:
            self._control_client().command(sql)
        except StockqError:
            raise
        except Exception as exc:
            raise WarehouseUnavailable(short_error(exc)) from None

    async def aclose(self) -> None:
        """Refuse new statements, kill the running ones, close every session."""
        self._closed = True
        running = dict(self._running)
        if running:
            log.info("query.stopping", running=len(running))
            await self._kill(list(running))
            await asyncio.wait(running.values(), timeout=KILL_WAIT)
        loop = asyncio.get_running_loop()
        for session in list(self._sessions):
            if session not in self._running:  # a statement that outlived its kill keeps it
                await _on(loop, session.executor, session.close)
                session.executor.shutdown(wait=False)
        self._sessions.clear()
        self._idle.clear()
        if self._control is not None:
            await _on(loop, self._control_executor, self._control.close)
        self._control_executor.shutdown(wait=False)


async def _on(loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor,
              func: Callable[[], T]) -> T | None:
    try:
        return await asyncio.wait_for(loop.run_in_executor(executor, func), KILL_WAIT)
    except Exception:  # closing is best effort
        return None


def _clean(message: str) -> str:
    """ClickHouse's message without the wrapper call that echoes the whole statement
    and without the version trailer; the error's name stays at the end."""
    name = _NAME.search(message)
    text = _VERSION.sub("", _SCOPE.sub("", message)).strip()
    if name and not text.endswith(name.group(0)):
        text = f"{text} {name.group(0)}"
    return text
