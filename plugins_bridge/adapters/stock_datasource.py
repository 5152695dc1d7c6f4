"""Plugins of the ``stock_datasource`` project as stockq plugins.

:func:`discover` takes ``stock_datasource.core.plugin_manager.plugin_manager`` (running
its ``discover_plugins()`` when nothing is registered yet) and wraps every enabled
``BasePlugin`` in an :class:`AdaptedPlugin`.  Without ``stock_datasource`` installed it
returns ``[]``.  Every accessor of the original is optional and may fail: a plugin whose
name, ``is_enabled()``, ``get_config()``, ``get_rate_limit()`` or ``get_dependencies()``
raises is skipped (``plugins.adapter_skipped``) and the others are still adapted.

Mapping (``config`` is the plugin's ``get_config()``, its config.json):

* ``default_timeout_seconds``: ``config["timeout_seconds"]``, else ``config["timeout"]``;
* ``default_max_attempts``: ``config["retry_attempts"]``, else ``config["max_retries"]``,
  plus one: both count *retries* after the first attempt, stockq counts attempts, so
  ``retry_attempts: 2`` is 3 attempts and ``0`` is 1;
* ``rate_limit_per_minute``: ``get_rate_limit()``, else ``config["rate_limit"]``;
* ``dependencies``: ``get_dependencies()`` followed by ``config["dependencies"]``
  (without repeats or the plugin itself);
* ``schedule`` (see :func:`map_schedule`): ``config["schedule"]``;
* ``groups``: ``("stock_datasource",)``; ``description``: the plugin's, else the config's.

A number that is not a positive whole number (``retry_attempts`` may be 0) is ignored
with ``plugins.adapter_value_ignored``, and the queue's default applies; a schedule that
cannot be mapped is dropped with ``plugins.adapter_schedule_ignored`` (the plugin is
then not scheduled, but can still be submitted).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from app.errors import ConfigError
from app.logs import get_logger
from app.scheduler.triggers import DAY_NAMES, cron_trigger

log = get_logger("stockq.plugins")

PACKAGE = "stock_datasource"
MANAGER_MODULE = "stock_datasource.core.plugin_manager"
GROUP = "stock_datasource"
DEFAULT_TIME = "18:00"  # BasePlugin.get_schedule()'s defaults
DEFAULT_WEEKDAY = "mon"
DEFAULT_MONTH_DAY = "1"

_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_FREQUENCIES = ("daily", "weekly", "monthly")


class _Skip(Exception):
    """The plugin cannot be adapted (the reason is the message)."""


class AdaptedPlugin:
    """A stock_datasource ``BasePlugin`` behind the stockq plugin contract."""

    groups: tuple[str, ...] = (GROUP,)
    optional_dependencies: tuple[str, ...] = ()

    def __init__(self, original: Any, *, name: str, description: str = "",
                 version: str = "", default_timeout_seconds: int | None = None,
                 default_max_attempts: int | None = None,
                 rate_limit_per_minute: int | None = None,
                 dependencies: Iterable[str] = (), schedule: str | None = None) -> None:
        self.original = original
        self.name = name
        self.description = description
        self.version = version
        self.default_timeout_seconds = default_timeout_seconds
        self.default_max_attempts = default_max_attempts
        self.rate_limit_per_minute = rate_limit_per_minute
        self.dependencies: tuple[str, ...] = tuple(dependencies)
        self.schedule = schedule

    def run(self, **params: Any) -> dict[str, Any]:
        """The original ``run(**params)``; its exceptions propagate (the worker
        classifies them); a result that is not a dict becomes a failed result."""
        result = self.original.run(**params)
        if isinstance(result, dict):
            return result
        return {"status": "failed", "error_type": "invalid_result",
                "error": f"stock_datasource plugin {self.name!r} returned "
                         f"{type(result).__name__}, not a result dict"}

    def __repr__(self) -> str:
        return f"AdaptedPlugin({self.name!r})"


# ----------------------------------------------------------------------- discovery
def discover() -> list[AdaptedPlugin]:
    """Every enabled stock_datasource plugin, adapted; ``[]`` without the package."""
    try:
        module = importlib.import_module(MANAGER_MODULE)
    except ImportError as exc:
        missing = exc.name or ""
        if missing != PACKAGE:  # installed, but something it needs is not: say so
            log.warning("plugins.adapter_failed", adapter=PACKAGE,
                        error=f"{type(exc).__name__}: {exc}")
        return []
    except Exception as exc:
        log.warning("plugins.adapter_failed", adapter=PACKAGE,
                    error=f"{type(exc).__name__}: {exc}")
        return []
    try:
        manager = module.plugin_manager
        if not manager.plugins:
            manager.discover_plugins()
        originals = list(dict(manager.plugins).items())
    except Exception as exc:
        log.warning("plugins.adapter_failed", adapter=PACKAGE,
                    error=f"{type(exc).__name__}: {exc}")
        return []
    adapted: list[AdaptedPlugin] = []
    for key, original in originals:
        try:
            plugin = adapt(original)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, _Skip) else f"{type(exc).__name__}: {exc}"
            log.warning("plugins.adapter_skipped", adapter=PACKAGE, plugin=str(key),
                        reason=reason)
            continue
        if plugin is not None:
            adapted.append(plugin)
    return adapted


def adapt(original: Any) -> AdaptedPlugin | None:
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
    timeout = _first_count(name, config, ("timeout_seconds", "timeout"))
    retries = _first_count(name, config, ("retry_attempts", "max_retries"), minimum=0)
    rate = _call(original, "get_rate_limit")
    rate_limit = (_count(name, "get_rate_limit()", rate) if rate is not None
                  else _first_count(name, config, ("rate_limit",)))
    return AdaptedPlugin(
        original, name=name, description=description,
        version=_text(getattr(original, "version", "")),
        default_timeout_seconds=timeout,
        default_max_attempts=None if retries is None else retries + 1,
        rate_limit_per_minute=rate_limit,
        dependencies=_dependencies(name, original, config),
        schedule=map_schedule(config.get("schedule"), name),
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


def _count(plugin: str, key: str, value: Any, minimum: int = 1) -> int | None:
    """``value`` as a whole number >= ``minimum`` (``"120"`` and ``120.0`` too), else
    None with a warning."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or number < minimum:
        log.warning("plugins.adapter_value_ignored", adapter=PACKAGE, plugin=plugin,
                    key=key, value=repr(value))
        return None
    return number


def _first_count(plugin: str, config: dict[str, Any], keys: tuple[str, ...],
                 minimum: int = 1) -> int | None:
    for key in keys:
        if config.get(key) is not None:
            return _count(plugin, key, config[key], minimum)
    return None


def _dependencies(name: str, original: Any, config: dict[str, Any]) -> tuple[str, ...]:
    declared: list[Any] = []
    for value in (_call(original, "get_dependencies"), config.get("dependencies")):
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
    """A stock_datasource schedule as a stockq ``schedule``, or None (no schedule, or
    one that cannot be mapped: dropped with ``plugins.adapter_schedule_ignored``).

    * ``"daily"`` (or ``{"frequency": "daily"}`` without a time) -> ``"daily"``: the
      plugin joins the daily sync;
    * ``"HH:MM"`` and ``{"frequency": "daily", "time": "HH:MM"}`` -> ``"daily HH:MM"``
      (stockq's daily runs Monday to Friday);
    * ``{"frequency": "weekly", "day_of_week": D, "time": T}`` -> ``"weekly D T"``; D is
      a day name (``fri``, ``friday``) or a crontab number (0 or 7 = Sunday, 5 = Friday),
      default ``mon``;
    * ``{"frequency": "monthly", "day": N, "time": T}`` -> ``"monthly N T"``; N is 1-31 or
      ``last``, default 1;
    * a missing time is 18:00 (except for daily, see above), as ``BasePlugin.get_schedule``;
    * ``"weekly"``/``"monthly"`` alone take the defaults;
    * any other string (``"weekly fri 18:00"``, a crontab) is kept when stockq accepts it;
      a dict may also hold one as ``"cron"``.
    """
    try:
        mapped = _map(value)
        if mapped is not None and mapped != "daily":
            cron_trigger(mapped, "UTC")  # validates fields too (normalise checks the shape)
        return mapped
    except (ConfigError, _Skip) as exc:
        log.warning("plugins.adapter_schedule_ignored", adapter=PACKAGE, plugin=plugin,
                    schedule=repr(value), reason=str(exc))
        return None


def _map(value: Any) -> str | None:
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        text = " ".join(value.split())
        lowered = text.lower()
        if _CLOCK.match(text):
            return f"daily {text}"
        if lowered in _FREQUENCIES:
            return _map({"frequency": lowered})
        return text
    if not isinstance(value, Mapping):
        raise _Skip(f"a schedule must be a string or a dict, not {type(value).__name__}")
    if value.get("cron"):
        return _map(str(value["cron"]))
    frequency = str(value.get("frequency") or "daily").strip().lower()
    time = value.get("time")
    if frequency == "daily" and not time:
        return "daily"
    clock = str(time or DEFAULT_TIME).strip()
    if not _CLOCK.match(clock):
        raise _Skip(f"time {time!r} is not HH:MM")
    if frequency == "daily":
        return f"daily {clock}"
    if frequency == "weekly":
        return f"weekly {_weekday(value.get('day_of_week'))} {clock}"
    if frequency == "monthly":
        day = value.get("day", value.get("day_of_month"))
        day_text = DEFAULT_MONTH_DAY if day is None else str(day).strip().lower()
        return f"monthly {day_text} {clock}"
    raise _Skip(f"frequency {frequency!r} is not daily, weekly or monthly")


def _weekday(day: Any) -> str:
    if day is None or day == "":
        return DEFAULT_WEEKDAY
    if isinstance(day, int) and not isinstance(day, bool) and 0 <= day <= 7:
        return DAY_NAMES[day % 7]
    text = str(day).strip().lower()
    if text.isdigit() and 0 <= int(text) <= 7:
        return DAY_NAMES[int(text) % 7]
    return text  # a name; normalise rejects what is not one
