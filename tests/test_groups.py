"""Plugin groups (app/groups.py) on a real redis-server: declared groups are read-only,
groups made at run time persist in one hash with unique names, concurrent creations
of one name let exactly one through."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from app.errors import GroupNotFound, InvalidInput, ReadOnlyGroup, UnknownPlugin
from app.groups import create_group, delete_group, get_group, list_groups, update_group
from app.queue import TaskQueue
from app.settings import Settings
from tests.api_support import registry
from tests.conftest import FakeClock


async def test_declared_and_made_groups(queue: TaskQueue, client: aioredis.Redis,
                                        clock: FakeClock) -> None:
    plugins = registry()
    declared = await list_groups(queue, plugins)
    assert [(g.group_id, g.plugin_names, g.declared) for g in declared] == [
        ("daily", ("adjust", "prices"), True), ("reference", ("calendar",), True),
        ("reports", ("report",), True)]
    made = await create_group(queue, plugins, name="evening", plugin_names=["report", "prices"],
                              description="after the close", default_task_type="backfill",
                              created_by="ops")
    assert len(made.group_id) == 8 and not made.declared
    assert made.plugin_names == ("report", "prices")  # the order given
    assert made.created_at == "2026-01-01T00:00:00.000+00:00" and made.updated_at == ""
    stored = await client.hgetall("stock:groups")  # type: ignore[misc]
    assert list(stored) == [made.group_id]
    assert await get_group(queue, plugins, made.group_id) == made
    assert (await get_group(queue, plugins, "daily")).declared

    clock.advance(60)
    changed = await update_group(queue, plugins, made.group_id, name="late",
                                 plugin_names=["calendar"], default_task_type="full")
    assert (changed.name, changed.plugin_names, changed.default_task_type) == (
        "late", ("calendar",), "full")
    assert changed.description == "after the close" and changed.created_by == "ops"
    assert changed.updated_at == "2026-01-01T00:01:00.000+00:00"
    assert [g.name for g in await list_groups(queue, plugins)] == [
        "daily", "reference", "reports", "late"]

    await delete_group(queue, plugins, made.group_id)
    assert await client.exists("stock:groups") == 0
    with pytest.raises(GroupNotFound, match="no plugin group"):
        await get_group(queue, plugins, made.group_id)
    with pytest.raises(GroupNotFound):
        await delete_group(queue, plugins, made.group_id)
    with pytest.raises(GroupNotFound):
        await update_group(queue, plugins, "nothere", name="x")


async def test_refusals(queue: TaskQueue, client: aioredis.Redis, clock: FakeClock) -> None:
    plugins = registry()
    with pytest.raises(ReadOnlyGroup, match="declared by its plugins"):
        await update_group(queue, plugins, "daily", name="mine")
    with pytest.raises(ReadOnlyGroup):
        await delete_group(queue, plugins, "daily")
    with pytest.raises(UnknownPlugin, match="unknown plugin 'nope'"):
        await create_group(queue, plugins, name="x", plugin_names=["prices", "nope"])
    for kwargs, fragment in (({"name": "", "plugin_names": ["prices"]}, "1-50"),
                             ({"name": "x" * 51, "plugin_names": ["prices"]}, "1-50"),
                             ({"name": "x", "plugin_names": []}, "at least one plugin"),
                             ({"name": "x", "plugin_names": ["prices"],
                               "description": "d" * 201}, "at most 200"),
                             ({"name": "x", "plugin_names": ["prices"],
                               "default_task_type": "weekly"}, "default_task_type"),
                             ({"name": "daily", "plugin_names": ["prices"]},
                              "already exists")):
        with pytest.raises(InvalidInput, match=fragment):
            await create_group(queue, plugins, **kwargs)  # type: ignore[arg-type]
    first = await create_group(queue, plugins, name="one", plugin_names=["prices"])
    clock.advance(1)
    second = await create_group(queue, plugins, name="two", plugin_names=["prices"])
    with pytest.raises(InvalidInput, match="'one' already exists"):
        await create_group(queue, plugins, name="one", plugin_names=["calendar"])
    with pytest.raises(InvalidInput, match="'one' already exists"):
        await update_group(queue, plugins, second.group_id, name="one")
    same = await update_group(queue, plugins, first.group_id, name="one")  # its own name
    assert same.name == "one"
    await client.hset("stock:groups", "broken", "{not json")  # type: ignore[misc]
    assert [g.name for g in await list_groups(queue, plugins)][-2:] == ["one", "two"]


async def test_concurrent_creations_of_one_name(settings: Settings) -> None:
    plugins = registry()
    clients = [aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
               for _ in range(8)]
    queues = [TaskQueue(c, settings) for c in clients]
    try:
        outcomes = await asyncio.gather(
            *(create_group(q, plugins, name="race", plugin_names=["prices"]) for q in queues),
            return_exceptions=True)
        made = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, InvalidInput)]
        assert len(made) == 1 and len(refused) == 7
        assert [g.name for g in await list_groups(queues[0], plugins)
                if not g.declared] == ["race"]
    finally:
        for q, c in zip(queues, clients, strict=True):
            await q.aclose()
            await c.aclose()
