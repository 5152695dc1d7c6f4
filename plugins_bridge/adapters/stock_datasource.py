"""Plugins of the ``stock_datasource`` project as stockq plugins, run as that project's
own task worker (``services/task_worker.py``) runs them.

:func:`discover` first makes the ``tushare`` package keep its token in memory and route
task calls through stockq (:mod:`plugins_bridge.adapters.sds_tushare`), then takes
``stock_datasource.core.plugin_manager.plugin_manager`` (running its
``discover_plugins()`` when nothing is registered yet) and wraps every enabled plugin in
an :class:`AdaptedPlugin`.  Without ``stock_datasource`` installed it returns ``[]``.
What could not be loaded is kept in :func:`unavailable` (and logged): the plugin manager
itself (``plugins.adapter_failed``: e.g. it needs ``TUSHARE_TOKEN`` to import), a plugin
module that fails to import (``plugins.adapter_module_failed``: a missing dependency,
which the manager only logs) and a plugin that cannot be adapted
(``plugins.adapter_skipped``).

Mapping (``config`` is the plugin's config.json), each as stock_datasource behaves:

* ``default_max_attempts`` 3, ``default_timeout_seconds`` 3600 and ``task_timeouts``
  ``{"full": 7200, "backfill": 7200}``: its queue gives every task 3 attempts and its
  sync service 3600 s for incremental tasks, 7200 s for others.  The config's
  ``retry_attempts`` and ``timeout`` are not used for tasks there (they describe the
  plugin's own HTTP retries and request timeout), and are not here;
* ``rate_limit_per_minute``: ``get_rate_limit()`` (config ``rate_limit``, or its
  ``calls_per_minute``), else 120: the shared quota of its TuShare calls;
* ``dependencies``: ``get_dependencies()`` and config ``dependencies``;
  ``optional_dependencies``: ``get_optional_dependencies()``;
* ``schedule`` (:func:`map_schedule`) from ``get_schedule()``: its unified scheduler runs
  one daily job of every ``daily`` plugin (``daily``: stockq's ``daily_sync``), one of the
  weekly plugins on Saturday at 10:00 and one of the monthly ones on the 1st at 10:00
  (``weekly``/``monthly``: stockq's ``weekly_sync``/``monthly_sync``), whatever the
  plugin's own time or day; ``realtime`` plugins are not scheduled;
* arguments of each task type: :mod:`plugins_bridge.adapters.sds_plan` (``plan_runs``);
* ``groups``: ``("stock_datasource",)``;
* what the sidecar shows of a plugin (its data-management routes): ``category`` and
  ``role`` (``get_category()``, ``get_role()``), ``version``, ``config`` (config.json),
  ``table_schema`` (``get_schema()``: schema.json, read when first asked for).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from app.logs import get_logger
from plugins_bridge.adapters import sds_tushare
from plugins_bridge.adapters.sds_plan import (
    FULL_SYNC_DAYS,
    MARKET_CN,
    MARKET_HK,
    Calendar,
    Planner,
    classify_failure,
    detect_style,
)
from plugins_bridge.contract import RunPlan
from plugins_bridge.progress import TaskContext

log = get_logger("stockq.plugins")

PACKAGE = "stock_datasource"
MANAGER_MODULE = "stock_datasource.core.plugin_manager"
PLUGINS_PACKAGE = "stock_datasource.plugins"
GROUP = "stock_datasource"
MAX_ATTEMPTS = 3  # services/task_queue.py: max_attempts of every task
TIMEOUT_SECONDS = 3600  # incremental; modules/datamanage/service.py
LONG_TIMEOUT_SECONDS = 7200  # full and backfill
WEEKLY = "weekly"  # stockq's weekly_sync and monthly_sync: tasks/unified_scheduler.py's
MONTHLY = "monthly"  # weekly (Saturday 10:00) and monthly (the 1st, 10:00) jobs

_CLOCK = r"([01]?\d|2[0-3]):[0-5]\d"
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sunday", "monday", "tuesday",
         "wednesday", "thursday", "friday", "saturday")
_SHORTHAND = re.compile(rf"^(daily {_CLOCK}|weekly ({'|'.join(_DAYS)}|[0-7]) {_CLOCK}|"
                        rf"monthly (3[01]|[12]\d|[1-9]|last) {_CLOCK})$")
_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
_CRON_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12))


class _Skip(Exception):
    """The plugin cannot be adapted (the reason is the message)."""


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Something of stock_datasource that could not be loaded, and why."""

    name: str
    reason: str
    source: str = GROUP

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "name": self.name, "reason": self.reason}


_unavailable: list[Unavailable] = []


def unavailable() -> list[Unavailable]:
    """What the last :func:`discover` could not load."""
    return list(_unavailable)


class AdaptedPlugin:
    """A stock_datasource ``BasePlugin`` behind the stockq plugin contract."""

    groups: tuple[str, ...] = (GROUP,)

    def __init__(self, original: Any, *, name: str, description: str = "",
                 version: str = "", rate_limit_per_minute: int | None = None,
                 dependencies: Iterable[str] = (), optional_dependencies: Iterable[str] = (),
                 schedule: str | None = None, planner: Planner | None = None,
                 category: str = "", role: str = "",
                 config: Mapping[str, Any] | None = None) -> None:
        self.original = original
        self.name = name
        self.description = description
        self.version = version
        self.category = category
        self.role = role
        self.config: dict[str, Any] = dict(config or {})
        self.default_timeout_seconds = TIMEOUT_SECONDS
        self.task_timeouts = {"full": LONG_TIMEOUT_SECONDS, "backfill": LONG_TIMEOUT_SECONDS}
        self.default_max_attempts = MAX_ATTEMPTS
        self.rate_limit_per_minute = rate_limit_per_minute
        self.dependencies: tuple[str, ...] = tuple(dependencies)
        self.optional_dependencies: tuple[str, ...] = tuple(optional_dependencies)
        self.schedule = schedule
        self.planner = planner or Planner(name, detect_style(name, {}), MARKET_CN,
                                          FULL_SYNC_DAYS, Calendar())

    @property
    def table_schema(self) -> dict[str, Any] | None:
        """The original's ``get_schema()`` (its table: name, columns, keys, engine), or
        None when it has none or cannot give it."""
        try:
            schema = _call(self.original, "get_schema")
        except Exception as exc:  # its schema.json, read on first use: tell, go on
            log.warning("plugins.adapter_schema_failed", adapter=PACKAGE, plugin=self.name,
                        error=str(exc)[:300])
            return None
        return dict(schema) if isinstance(schema, Mapping) else None

    def plan_runs(self, task: TaskContext) -> RunPlan:
        """The ``run()`` calls of ``task`` (:mod:`plugins_bridge.adapters.sds_plan`)."""
        return self.planner.plan(task)

    def run(self, **params: Any) -> dict[str, Any]:
        """The original ``run(**params)`` with its TuShare calls routed through stockq;
        a failed result gets the ``error_type`` of its cause.  Exceptions propagate
        (the worker classifies them); a result that is not a dict is a failure."""
        from plugins_bridge.runner import failure_text

        with sds_tushare.calls_of(self.name, self.rate_limit_per_minute) as calls, \
                _logged_errors() as logged:
            result = self.original.run(**params)
        if not isinstance(result, dict):
            return {"status": "failed", "error_type": "invalid_result",
                    "error": f"stock_datasource plugin {self.name!r} returned "
                             f"{type(result).__name__}, not a result dict"}
        if result.get("status") != "success":
            text = failure_text(result)
            kind, retry_after = classify_failure(result, text, calls.errors)
            result = {**result, "error_type": kind}
            if retry_after:
                result["retry_after"] = retry_after
            cause = str(calls.errors[-1]) if calls.errors else _cause(logged)
            if cause and cause not in text and not result.get("error_detail"):
                result["error_detail"] = f"cause: {cause}"
        return result

    def __repr__(self) -> str:
        return f"AdaptedPlugin({self.name!r})"


class _ErrorLog(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        # the ClickHouse client logs "... status=404, url=..., body=<ClickHouse's message>"
        self.messages.append(text.split("body=", 1)[-1].strip()[:CAUSE_CHARS])


CAUSE_CHARS = 500


def _cause(logged: list[str]) -> str:
    """The last logged error that carries a server's exception text, else the last."""
    return next((m for m in reversed(logged) if "Exception" in m), logged[-1] if logged else "")


@contextmanager
def _logged_errors() -> Iterator[list[str]]:
    """The error lines stock_datasource's modules log through ``logging`` meanwhile: a
    result often holds only ``RetryError[...]``, the cause is in the log."""
    messages: list[str] = []
    handler = _ErrorLog(messages)
    logger = logging.getLogger(PACKAGE)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


# ----------------------------------------------------------------------- discovery
def _failed(name: str, exc: BaseException, event: str = "plugins.adapter_failed") -> None:
    reason = f"{type(exc).__name__}: {exc}"
    _unavailable.append(Unavailable(name, reason))
    log.warning(event, adapter=PACKAGE, module=name, error=reason)


def discover() -> list[AdaptedPlugin]:
    """Every enabled stock_datasource plugin, adapted; ``[]`` without the package."""
    _unavailable.clear()
    try:
        importlib.import_module(PACKAGE)
    except ImportError as exc:
        if (exc.name or "") != PACKAGE:
            _failed(PACKAGE, exc)
        return []
    sds_tushare.install()  # before the plugins' modules call tushare.set_token()
    try:
        module = importlib.import_module(MANAGER_MODULE)
        manager = module.plugin_manager
        if not manager.plugins:
            manager.discover_plugins()
        originals = list(dict(manager.plugins).items())
    except Exception as exc:  # e.g. it cannot be imported without TUSHARE_TOKEN
        _failed(MANAGER_MODULE, exc)
        return []
    _find_failed_modules(originals)
    adapted: list[AdaptedPlugin] = []
    calendar = Calendar()
    for key, original in originals:
        try:
            plugin = adapt(original, calendar)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, _Skip) else f"{type(exc).__name__}: {exc}"
            _unavailable.append(Unavailable(str(key), reason))
            log.warning("plugins.adapter_skipped", adapter=PACKAGE, plugin=str(key),
                        reason=reason)
            continue
        if plugin is not None:
            adapted.append(plugin)
    return adapted


def _find_failed_modules(originals: list[tuple[str, Any]]) -> None:
    """The plugin modules the manager could not import (it only logs them)."""
    try:
        package = importlib.import_module(PLUGINS_PACKAGE)
        folders = list(getattr(package, "__path__", []))
    except Exception:
        return
    loaded = {type(p).__module__.split(".")[2] for _, p in originals
              if type(p).__module__.startswith(PLUGINS_PACKAGE + ".")}
    for info in pkgutil.iter_modules(folders):
        if info.name.startswith("_") or info.name in loaded:
            continue
        name = f"{PLUGINS_PACKAGE}.{info.name}"
        try:
            importlib.import_module(name)  # a failed import is not cached: same error
        except Exception as exc:
            _failed(name, exc, "plugins.adapter_module_failed")


def adapt(original: Any, calendar: Calendar | None = None) -> AdaptedPlugin | None:
    """``original`` as an :class:`AdaptedPlugin`, or None when it is disabled.  Raises
    when the plugin is unusable (no name or run, an accessor that fails)."""
    name = getattr(original, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise _Skip(f"the plugin has no usable name ({name!r})")
    if not callable(getattr(original, "run", None)):
        raise _Skip("the plugin has no run()")
    config = _config(original)
    if not _enabled(original, config):
        return None
    description = _text(getattr(original, "description", "")) or _text(config.get("description"))
    rate = _call(original, "get_rate_limit")
    category = getattr(_call(original, "get_category"), "value", "")
    role = getattr(_call(original, "get_role"), "value", "")
    full_days = _count(name, "full_sync_days", config.get("full_sync_days")) \
        if config.get("full_sync_days") is not None else None
    planner = Planner(name, detect_style(name, config),
                      MARKET_HK if category == "hk_stock" else MARKET_CN,
                      full_days or FULL_SYNC_DAYS, calendar or Calendar())
    schedule_source = (_call(original, "get_schedule")
                       if callable(getattr(original, "get_schedule", None))
                       else config.get("schedule"))
    return AdaptedPlugin(
        original, name=name, description=description,
        version=_text(getattr(original, "version", "")),
        rate_limit_per_minute=_rate_limit(name, rate if rate is not None
                                          else config.get("rate_limit")),
        dependencies=_names(name, [_call(original, "get_dependencies"),
                                   config.get("dependencies")]),
        optional_dependencies=_names(name, [_call(original, "get_optional_dependencies")]),
        schedule=map_schedule(schedule_source, name),
        planner=planner, category=_text(category), role=_text(role), config=config,
    )


def _call(original: Any, method: str) -> Any:
    """``original.method()``, or None when it has no such method."""
    func = getattr(original, method, None)
    return func() if callable(func) else None


def _config(original: Any) -> dict[str, Any]:
    config = _call(original, "get_config")
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise _Skip(f"get_config() returned {type(config).__name__}, not a dict")
    return dict(config)


def _enabled(original: Any, config: dict[str, Any]) -> bool:
    if callable(getattr(original, "is_enabled", None)):
        return bool(original.is_enabled())
    return bool(config.get("enabled", True))


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _count(plugin: str, key: str, value: Any) -> int | None:
    """``value`` as a whole number >= 1 (``"120"`` and ``120.0`` too), else None with a
    warning."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or number < 1:
        log.warning("plugins.adapter_value_ignored", adapter=PACKAGE, plugin=plugin,
                    key=key, value=repr(value))
        return None
    return number


def _rate_limit(plugin: str, value: Any) -> int:
    """Calls per minute: a number, or a dict's ``calls_per_minute``; else 120."""
    if value is None:
        return sds_tushare.DEFAULT_RATE_LIMIT
    if isinstance(value, Mapping):
        if "calls_per_minute" not in value:
            return sds_tushare.DEFAULT_RATE_LIMIT
        value = value["calls_per_minute"]
    return _count(plugin, "rate_limit", value) or sds_tushare.DEFAULT_RATE_LIMIT


def _names(name: str, sources: list[Any]) -> tuple[str, ...]:
    declared: list[Any] = []
    for value in sources:
        if value is None:
            continue
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise _Skip(f"dependencies must be a list of plugin names, got {value!r}")
        declared += list(value)
    out: list[str] = []
    for dep in declared:
        if not isinstance(dep, str) or not dep.strip():
            raise _Skip(f"dependency {dep!r} is not a plugin name")
        if dep.strip() != name and dep.strip() not in out:
            out.append(dep.strip())
    return tuple(out)


# ------------------------------------------------------------------------ schedule
def map_schedule(value: Any, plugin: str = "") -> str | None:
    """A stock_datasource schedule as a stockq ``schedule`` (see the module docstring),
    or None: not scheduled (``realtime``, none, or one that cannot be mapped, dropped
    with ``plugins.adapter_schedule_ignored``).

    A dict (what ``get_schedule()`` returns) counts by its ``frequency`` (default
    ``daily``, also for a ``cron`` entry, as ``get_schedule()`` fills it in): ``daily``,
    ``weekly`` and ``monthly`` are kept (stockq's ``daily_sync``, ``weekly_sync`` and
    ``monthly_sync``), ``realtime`` -> None.  A string is a
    frequency word, or a stockq schedule kept as it is (``"weekly fri 18:00"``, a
    5-field crontab) for plugins written that way.
    """
    try:
        return _map(value)
    except _Skip as exc:
        log.warning("plugins.adapter_schedule_ignored", adapter=PACKAGE, plugin=plugin,
                    schedule=repr(value), reason=str(exc))
        return None


_BY_FREQUENCY: dict[str, str | None] = {"daily": "daily", "weekly": WEEKLY,
                                        "monthly": MONTHLY, "realtime": None}


def _map(value: Any) -> str | None:
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, Mapping):
        frequency = str(value.get("frequency") or "daily").strip().lower()
        if frequency not in _BY_FREQUENCY:
            raise _Skip(f"frequency {frequency!r} is not daily, weekly, monthly or realtime")
        return _BY_FREQUENCY[frequency]
    if not isinstance(value, str):
        raise _Skip(f"a schedule must be a dict or a string, not {type(value).__name__}")
    text = " ".join(value.split()).lower()
    if text in _BY_FREQUENCY:
        return _BY_FREQUENCY[text]
    if _SHORTHAND.match(text) or _valid_cron(text):
        return text
    raise _Skip("not a frequency, 'daily HH:MM', 'weekly DAY HH:MM', 'monthly N HH:MM' "
                "or a 5-field crontab")


def _valid_cron(text: str) -> bool:
    fields = text.split(" ")
    if len(fields) != 5 or any(token not in ("*", *_DAYS, *"01234567")
                               for token in re.split(r"[,/-]", fields[4])):
        return False
    for raw, (low, high) in zip(fields[:4], _CRON_BOUNDS, strict=True):
        if not _CRON_FIELD.match(raw):
            return False
        numbers = [int(n) for n in re.findall(r"(?<![/\d])\d+", raw)]
        if any(not low <= n <= high for n in numbers):
            return False
    return True
