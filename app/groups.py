"""Plugin groups: the ones the plugins declare (``groups`` of a plugin; read-only) and
the ones operators make at run time, kept in Redis (``stock:groups``: group id -> JSON).

A group made at run time has an 8-character hex id, a name unique among such groups, a
description, its plugins (registered ones, in the order given) and the task type its
runs default to.  A declared group's id is its name.  Edits are optimistic transactions
on the one hash (``WATCH``): two operators creating the same name at once cannot both
succeed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import WatchError

from app.errors import GroupNotFound, InvalidInput, ReadOnlyGroup
from app.models import TaskType
from app.queue import TaskQueue
from app.redis_client import redis_errors
from plugins_bridge.registry import PluginRegistry

MAX_NAME = 50
MAX_DESCRIPTION = 200
_TRIES = 10


@dataclass(frozen=True, slots=True)
class PluginGroup:
    group_id: str
    name: str
    plugin_names: tuple[str, ...]
    description: str = ""
    default_task_type: str = TaskType.INCREMENTAL.value
    created_at: str = ""  # ISO 8601, UTC; '' for a declared group
    updated_at: str = ""
    created_by: str = ""
    declared: bool = False  # by the plugins (read-only)

    def to_dict(self) -> dict[str, Any]:
        return {"group_id": self.group_id, "name": self.name,
                "description": self.description, "plugin_names": list(self.plugin_names),
                "default_task_type": self.default_task_type,
                "created_at": self.created_at or None, "updated_at": self.updated_at or None,
                "created_by": self.created_by, "declared": self.declared}

    def to_json(self) -> str:
        out = self.to_dict()
        out.pop("declared")
        return json.dumps(out, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str) -> PluginGroup | None:
        try:
            d = json.loads(raw)
            return cls(group_id=str(d["group_id"]), name=str(d["name"]),
                       plugin_names=tuple(str(p) for p in d.get("plugin_names") or ()),
                       description=str(d.get("description") or ""),
                       default_task_type=str(d.get("default_task_type") or "incremental"),
                       created_at=str(d.get("created_at") or ""),
                       updated_at=str(d.get("updated_at") or ""),
                       created_by=str(d.get("created_by") or ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def declared_groups(registry: PluginRegistry) -> list[PluginGroup]:
    return [PluginGroup(name, name, tuple(members), f"plugins that declare group {name!r}",
                        declared=True)
            for name, members in sorted(registry.groups().items())]


async def _stored(client: Any, key: str) -> list[PluginGroup]:
    """The groups made at run time (``client``: a Redis client, or a pipeline that
    watches ``key``, which then answers at once)."""
    raw = await client.hgetall(key)
    groups = [g for g in (PluginGroup.from_json(v) for v in raw.values()) if g is not None]
    return sorted(groups, key=lambda g: (g.created_at, g.group_id))


async def list_groups(queue: TaskQueue, registry: PluginRegistry) -> list[PluginGroup]:
    """Declared groups first (by name), then those made at run time (oldest first)."""
    with redis_errors(queue.settings):
        made = await _stored(queue.client, queue.keys.groups)
    return [*declared_groups(registry), *made]


async def get_group(queue: TaskQueue, registry: PluginRegistry, group_id: str) -> PluginGroup:
    for declared in declared_groups(registry):
        if declared.group_id == group_id:
            return declared
    with redis_errors(queue.settings):
        raw = await queue.client.hget(queue.keys.groups, group_id)  # type: ignore[misc]
    group = PluginGroup.from_json(raw) if raw else None
    if group is None:
        raise GroupNotFound(group_id)
    return group


def _check(registry: PluginRegistry, name: str | None, description: str | None,
           plugin_names: Sequence[str] | None, task_type: str | None) -> None:
    if name is not None and not (name.strip() and len(name) <= MAX_NAME):
        raise InvalidInput(f"a group name is 1-{MAX_NAME} characters")
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"a group description is at most {MAX_DESCRIPTION} characters")
    if plugin_names is not None:
        if not plugin_names:
            raise InvalidInput("a group needs at least one plugin")
        for plugin in plugin_names:
            registry.get(plugin)  # UnknownPlugin
    if task_type is not None:
        try:
            TaskType(task_type)
        except ValueError:
            raise InvalidInput(f"default_task_type {task_type!r} must be one of "
                               "incremental, full, backfill") from None


def _now(queue: TaskQueue) -> str:
    return datetime.fromtimestamp(queue.clock(), UTC).isoformat(timespec="milliseconds")


async def _write(queue: TaskQueue, registry: PluginRegistry, group_id: str,
                 build: Any) -> PluginGroup:
    """Read the stored groups, let ``build(groups) -> PluginGroup | None`` decide, and
    write (or, for None, delete) ``group_id`` unless the hash changed meanwhile."""
    key = queue.keys.groups
    with redis_errors(queue.settings):
        async with queue.client.pipeline(transaction=True) as pipe:
            for _ in range(_TRIES):
                try:
                    await pipe.watch(key)
                    groups = await _stored(pipe, key)
                    result: PluginGroup | None = build(groups)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if result is None:
                        pipe.hdel(key, group_id)
                    else:
                        pipe.hset(key, group_id, result.to_json())
                    await pipe.execute()
                    return result or PluginGroup(group_id, "", ())
                except WatchError:
                    continue
    raise InvalidInput("the plugin groups were changed by others meanwhile; try again")


def _unique(groups: list[PluginGroup], name: str, group_id: str) -> None:
    if any(g.name == name and g.group_id != group_id for g in groups):
        raise InvalidInput(f"group name {name!r} already exists")


async def create_group(queue: TaskQueue, registry: PluginRegistry, *, name: str,
                       plugin_names: Sequence[str], description: str = "",
                       default_task_type: str = "incremental",
                       created_by: str = "") -> PluginGroup:
    _check(registry, name, description, plugin_names, default_task_type)
    group_id = uuid.uuid4().hex[:8]
    group = PluginGroup(group_id, name.strip(), tuple(plugin_names), description,
                        default_task_type, _now(queue), "", created_by)

    def build(groups: list[PluginGroup]) -> PluginGroup:
        _unique([*declared_groups(registry), *groups], group.name, group_id)
        return group

    return await _write(queue, registry, group_id, build)


async def update_group(queue: TaskQueue, registry: PluginRegistry, group_id: str, *,
                       name: str | None = None, description: str | None = None,
                       plugin_names: Sequence[str] | None = None,
                       default_task_type: str | None = None) -> PluginGroup:
    if any(g.group_id == group_id for g in declared_groups(registry)):
        raise ReadOnlyGroup(f"group {group_id!r} is declared by its plugins; it cannot "
                            "be changed")
    _check(registry, name, description, plugin_names, default_task_type)

    def build(groups: list[PluginGroup]) -> PluginGroup:
        found = next((g for g in groups if g.group_id == group_id), None)
        if found is None:
            raise GroupNotFound(group_id)
        changed = replace(found, updated_at=_now(queue))
        if name is not None:
            _unique([*declared_groups(registry), *groups], name.strip(), group_id)
            changed = replace(changed, name=name.strip())
        if description is not None:
            changed = replace(changed, description=description)
        if plugin_names is not None:
            changed = replace(changed, plugin_names=tuple(plugin_names))
        if default_task_type is not None:
            changed = replace(changed, default_task_type=default_task_type)
        return changed

    return await _write(queue, registry, group_id, build)


async def delete_group(queue: TaskQueue, registry: PluginRegistry, group_id: str) -> None:
    if any(g.group_id == group_id for g in declared_groups(registry)):
        raise ReadOnlyGroup(f"group {group_id!r} is declared by its plugins; it cannot "
                            "be deleted")

    def build(groups: list[PluginGroup]) -> None:
        if not any(g.group_id == group_id for g in groups):
            raise GroupNotFound(group_id)
        return None

    await _write(queue, registry, group_id, build)
