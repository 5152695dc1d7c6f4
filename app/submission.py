"""Turning a request (CLI or HTTP) into a validated TaskSpec, plugin defaults applied."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.executions import BatchTask
from app.models import Limits, TaskSpec
from app.settings import Settings
from plugins_bridge.registry import PluginRegistry


def limits_from(settings: Settings) -> Limits:
    return Limits(
        default_timeout_seconds=settings.default_timeout_seconds,
        max_timeout_seconds=settings.max_timeout_seconds,
        default_max_attempts=settings.default_max_attempts,
        max_attempts_limit=settings.max_attempts_limit,
        max_trade_dates=settings.max_trade_dates,
    )


def build_spec(
    registry: PluginRegistry,
    settings: Settings,
    plugin_name: object,
    **fields: Any,
) -> TaskSpec:
    """Validate a submission.  Unknown plugins raise UnknownPlugin (naming the known
    ones); a timeout or attempt count not given comes from the plugin (its timeout for
    the task's type, then its default), then settings; a named queue not given comes
    from the plugin's ``queue`` (capability routing)."""
    spec = TaskSpec.build(plugin_name, limits=limits_from(settings), **fields)
    plugin = registry.get(spec.plugin_name)
    if (fields.get("timeout_seconds") is None or fields.get("max_attempts") is None
            or not fields.get("queue")):
        defaults: dict[str, Any] = {}
        if not fields.get("queue"):
            defaults["queue"] = getattr(plugin, "queue", None) or None
        if fields.get("timeout_seconds") is None:
            by_type = getattr(plugin, "task_timeouts", None) or {}
            defaults["timeout_seconds"] = by_type.get(spec.task_type.value) or \
                getattr(plugin, "default_timeout_seconds", None)
        if fields.get("max_attempts") is None:
            defaults["max_attempts"] = getattr(plugin, "default_max_attempts", None)
        defaults = {k: v for k, v in defaults.items() if v is not None}
        if defaults:
            spec = TaskSpec.build(
                plugin_name, limits=limits_from(settings), **{**fields, **defaults}
            )
    return spec


def plan_execution(
    registry: PluginRegistry,
    settings: Settings,
    names: Iterable[str],
    *,
    include_optional: bool = False,
    **fields: Any,
) -> tuple[list[str], list[BatchTask]]:
    """The tasks of one execution of ``names``: their dependencies added, in dependency
    order, each task waiting on the tasks of the plugins it needs that are in the batch.
    Returns ``(ordered plugin names, tasks)``."""
    ordered = registry.resolve(names, include_optional=include_optional)
    index = {name: i for i, name in enumerate(ordered)}
    tasks = []
    for name in ordered:
        plugin = registry.get(name)
        deps = [*getattr(plugin, "dependencies", ()),
                *getattr(plugin, "optional_dependencies", ())]
        spec = build_spec(registry, settings, name, **fields)
        tasks.append(BatchTask(spec, tuple(index[d] for d in deps if d in index)))
    return ordered, tasks
