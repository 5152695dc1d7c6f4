"""``/api/datamanage/groups/...``: stock_datasource's plugin-group routes over stockq's
groups (:mod:`app.groups`: the plugins' declared groups, read-only, and groups made at
run time, in Redis) and its executions."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from app import groups as plugin_groups
from app import queries
from app.api.app import REGISTRY, SETTINGS, STARTED, WAREHOUSE, jsonable, queue_of
from app.api.compat.requests import (
    GROUP_CHECK_DATES,
    GROUP_CREATE,
    GROUP_TRIGGER,
    GROUP_UPDATE,
    CompatError,
    body_of,
    query_text,
)
from app.api.compat.shapes import GROUP_CATEGORIES, Clock, execution_record
from app.api.compat.sync import clock_of, spec_fields, stored_range
from app.errors import GroupNotFound, InvalidInput, ReadOnlyGroup, UnknownPlugin
from app.executions import create_execution
from app.groups import PluginGroup
from app.plugin_data import TableReader, meta_of, table_of
from app.submission import plan_execution
from plugins_bridge.registry import PluginRegistry


def _category(group: PluginGroup, registry: PluginRegistry) -> str:
    """A group made at run time is ``custom``; a declared one is ``daily`` when every
    plugin in it is in the daily sync, else its plugins' category when they share one
    the frontend knows, else ``cn_stock``."""
    if not group.declared:
        return "custom"
    members = [n for n in group.plugin_names if n in registry]
    if members and all(str(getattr(registry.get(n), "schedule", "") or "").lower() == "daily"
                       for n in members):
        return "daily"
    shared = {meta_of(registry, n).category for n in members}
    known = {key for key, _ in GROUP_CATEGORIES}
    return shared.pop() if len(shared) == 1 and shared <= known else "cn_stock"


def _shape(group: PluginGroup, request: web.Request, clock: Clock) -> dict[str, Any]:
    started = request.app.get(STARTED) or time.time()
    return {"group_id": group.group_id, "name": group.name, "description": group.description,
            "plugin_names": list(group.plugin_names),
            "default_task_type": group.default_task_type,
            "category": _category(group, request.app[REGISTRY]),
            "is_predefined": group.declared, "is_readonly": group.declared,
            "created_at": clock.time(group.created_at) or clock.now(started),
            "updated_at": clock.time(group.updated_at), "created_by": group.created_by}


async def _group(request: web.Request) -> PluginGroup:
    group_id = request.match_info["group_id"]
    try:
        return await plugin_groups.get_group(queue_of(request), request.app[REGISTRY],
                                             group_id)
    except GroupNotFound:
        raise CompatError(404, f"Group {group_id} not found") from None


async def list_groups(request: web.Request) -> web.Response:
    clock = clock_of(request)
    found = [_shape(g, request, clock) for g in
             await plugin_groups.list_groups(queue_of(request), request.app[REGISTRY])]
    category = query_text(request, "category")
    if category:
        found = [g for g in found if g["category"] == category]
    declared = sum(1 for g in found if g["is_predefined"])
    return jsonable({"items": found, "total": len(found), "predefined_count": declared,
                     "custom_count": len(found) - declared})


async def predefined(request: web.Request) -> web.Response:
    clock = clock_of(request)
    declared = plugin_groups.declared_groups(request.app[REGISTRY])
    return jsonable({"groups": [_shape(g, request, clock) for g in declared],
                     "categories": [{"key": key, "label": label, "order": order}
                                    for order, (key, label) in enumerate(GROUP_CATEGORIES)]})


def _refusal(exc: Exception) -> CompatError:
    if isinstance(exc, UnknownPlugin):
        return CompatError(400, f"Plugin {exc.name} not found")
    if isinstance(exc, ReadOnlyGroup):
        return CompatError(403, "Cannot modify predefined group")
    if isinstance(exc, GroupNotFound):
        return CompatError(404, f"Group {exc.group_id} not found")
    assert isinstance(exc, InvalidInput)
    return CompatError(400, exc.message)


async def create(request: web.Request) -> web.Response:
    body = await body_of(request, GROUP_CREATE)
    try:
        group = await plugin_groups.create_group(
            queue_of(request), request.app[REGISTRY], name=body["name"],
            plugin_names=body["plugin_names"], description=body["description"],
            default_task_type=body["default_task_type"], created_by="stockq")
    except (UnknownPlugin, InvalidInput) as exc:
        raise _refusal(exc) from None
    return jsonable(_shape(group, request, clock_of(request)))


async def update(request: web.Request) -> web.Response:
    body = await body_of(request, GROUP_UPDATE)
    try:
        group = await plugin_groups.update_group(
            queue_of(request), request.app[REGISTRY], request.match_info["group_id"],
            name=body["name"], description=body["description"],
            plugin_names=body["plugin_names"], default_task_type=body["default_task_type"])
    except (UnknownPlugin, InvalidInput, ReadOnlyGroup, GroupNotFound) as exc:
        raise _refusal(exc) from None
    return jsonable(_shape(group, request, clock_of(request)))


async def delete(request: web.Request) -> web.Response:
    try:
        await plugin_groups.delete_group(queue_of(request), request.app[REGISTRY],
                                         request.match_info["group_id"])
    except ReadOnlyGroup:
        raise CompatError(403, "Cannot delete predefined group") from None
    except GroupNotFound as exc:
        raise _refusal(exc) from None
    return jsonable({"success": True, "message": "Group deleted"})


async def detail(request: web.Request) -> web.Response:
    group = await _group(request)
    registry = request.app[REGISTRY]
    reader = TableReader(request.app.get(WAREHOUSE))
    members = [n for n in group.plugin_names if n in registry]
    statuses = []
    for name in group.plugin_names:
        table = table_of(registry.get(name)) if name in registry else None
        statuses.append({"name": name, "exists": name in registry,
                         "has_data": bool(table and await reader.has_rows(table))})
    graph = {n: [d for d in getattr(registry.get(n), "dependencies", ()) or ()
                 if d in group.plugin_names] if n in registry else []
             for n in group.plugin_names}
    order = [n for n in registry.resolve(members) if n in members]
    return jsonable({**_shape(group, request, clock_of(request)), "plugin_status": statuses,
                     "dependency_graph": graph, "execution_order": order})


async def check_exists(request: web.Request) -> web.Response:
    body = await body_of(request, GROUP_CHECK_DATES)
    group = await _group(request)
    registry = request.app[REGISTRY]
    reader = TableReader(request.app.get(WAREHOUSE))
    dates = [str(d) for d in body["dates"]]
    plugins, with_data, without = [], [], []
    for name in group.plugin_names:
        if name not in registry:
            continue
        table = table_of(registry.get(name))
        present = await reader.dates_present(table, dates) if table else set()
        missing = [d for d in dates if d not in present]
        plugins.append({"plugin_name": name, "existing_dates": [d for d in dates
                                                                 if d in present],
                        "non_existing_dates": missing,
                        "has_date_column": bool(table and table.date_column)})
        if present:
            with_data.append(name)
        if missing:
            without.append(name)
    return jsonable({"group_id": group.group_id, "group_name": group.name,
                     "dates_checked": dates, "plugins": plugins,
                     "all_plugins_have_data": all(not p["non_existing_dates"]
                                                  for p in plugins),
                     "plugins_with_existing_data": with_data, "plugins_missing_data": without})


async def trigger(request: web.Request) -> web.Response:
    """One execution of the group's plugins (with what they need), trigger ``group``."""
    body = await body_of(request, GROUP_TRIGGER, optional=True)
    group = await _group(request)
    registry, queue = request.app[REGISTRY], queue_of(request)
    names = [n for n in group.plugin_names if n in registry]
    if not names:
        raise CompatError(400, "Group has no plugins")
    try:
        _, planned = plan_execution(registry, request.app[SETTINGS], names, trigger="group",
                                    **spec_fields(body))
    except (UnknownPlugin, InvalidInput) as exc:
        raise CompatError(400, exc.message) from None
    execution_id, ids = await create_execution(
        queue, planned, trigger_type="group", group_name=group.name,
        date_range=stored_range(body.get("trade_dates")))
    execution = await queries.get_execution(queue, execution_id)
    return jsonable(execution_record(execution, ids, clock_of(request)))
