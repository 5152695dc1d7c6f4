"""Numbered task pages (app/task_pages.py) on a real redis-server: totals, page numbers,
both directions, the three sort fields, status and plugin-name filters, the scan cap."""

from __future__ import annotations

import pytest

from app import task_pages
from app.errors import InvalidInput
from app.models import TaskSpec
from app.queue import TaskQueue
from app.task_pages import task_page
from tests.conftest import FakeClock


async def make(queue: TaskQueue, clock: FakeClock) -> list[str]:
    """Eight tasks a second apart, oldest first: Daily_A x3, daily_b x3, other x2."""
    ids = []
    for i, plugin in enumerate(["Daily_A", "daily_b", "other"] * 2 + ["Daily_A", "daily_b"]):
        clock.advance(1)
        tid, _ = await queue.enqueue(TaskSpec.build(plugin, params={"i": i}))
        ids.append(tid)
    return ids


async def test_unfiltered_pages_by_rank(queue: TaskQueue, clock: FakeClock) -> None:
    ids = await make(queue, clock)
    first = await task_page(queue, page=1, page_size=3)
    assert [t.task_id for t in first.items] == ids[::-1][:3] and first.total == 8
    last = await task_page(queue, page=3, page_size=3)
    assert [t.task_id for t in last.items] == ids[::-1][6:] and last.total == 8
    assert (await task_page(queue, page=4, page_size=3)).items == []
    oldest = await task_page(queue, page=1, page_size=2, descending=False)
    assert [t.task_id for t in oldest.items] == ids[:2] and not oldest.capped
    await queue.client.delete(queue.keys.task(ids[-1]))  # expired meanwhile
    again = await task_page(queue, page=1, page_size=3)
    assert [t.task_id for t in again.items] == ids[::-1][1:3] and again.total == 7
    assert (await task_page(queue, page=1, page_size=3)).total == 7  # dropped from index


async def test_filters_and_sorts(queue: TaskQueue, clock: FakeClock) -> None:
    ids = await make(queue, clock)
    by_plugin = await task_page(queue, plugin_contains="DAILY_a", page_size=10)
    assert [t.task_id for t in by_plugin.items] == [ids[6], ids[3], ids[0]]
    assert by_plugin.total == 3
    both = await task_page(queue, plugin_contains="daily", page_size=2, page=2)
    assert both.total == 6 and [t.task_id for t in both.items] == [ids[4], ids[3]]
    assert (await task_page(queue, plugin_contains="nothing")).total == 0

    # run three: claimed oldest first (priority normal), ended in another order
    claimed = []
    for _ in range(3):
        clock.advance(10)
        task = await queue.claim("w")
        assert task is not None
        claimed.append(task)
    clock.advance(10)
    await queue.complete(claimed[2])
    clock.advance(10)
    await queue.complete(claimed[0])
    running = await task_page(queue, status="running")
    assert [t.task_id for t in running.items] == [claimed[1].task_id]
    done = await task_page(queue, status="completed", sort_by="completed_at")
    assert [t.task_id for t in done.items] == [claimed[0].task_id, claimed[2].task_id]
    done_created = await task_page(queue, status="completed", sort_by="created_at",
                                   descending=False)
    assert [t.task_id for t in done_created.items] == [ids[0], ids[2]]
    started = await task_page(queue, sort_by="started_at", page_size=4)
    assert [t.task_id for t in started.items][:3] == [ids[2], ids[1], ids[0]]
    assert started.total == 8  # never started: last (newest created first among them)
    assert started.items[3].task_id == ids[7]
    mixed = await task_page(queue, status="pending", plugin_contains="daily_B")
    assert [t.task_id for t in mixed.items] == [ids[7], ids[4]]


async def test_cap_and_refusals(queue: TaskQueue, clock: FakeClock,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    ids = await make(queue, clock)
    monkeypatch.setattr(task_pages, "SCAN_CAP", 4)
    capped = await task_page(queue, plugin_contains="daily", page_size=10)
    assert capped.capped and capped.total == 4
    assert [t.task_id for t in capped.items] == [ids[7], ids[6], ids[4], ids[3]]
    pending = await task_page(queue, status="pending", plugin_contains="other")
    assert pending.capped and [t.task_id for t in pending.items] == [ids[5]]
    unfiltered = await task_page(queue, page_size=10)
    assert not unfiltered.capped and unfiltered.total == 8  # by rank: never capped
    for kwargs, fragment in (({"page": 0}, "page must be at least 1"),
                             ({"page_size": 501}, "page_size between 1 and 500"),
                             ({"sort_by": "name"}, "sort_by 'name' must be one of"),
                             ({"status": "done"}, "status 'done' must be one of")):
        with pytest.raises(InvalidInput, match=fragment):
            await task_page(queue, **kwargs)  # type: ignore[arg-type]
