"""Every Redis key stockq uses, in one module.

The prefix is the *namespace* (``STOCKQ_NAMESPACE``): deployments that share one Redis
(a demo, development, production) keep apart by using different ones.  The default
``stock`` keeps the key names of the system stockq replaces, so producers and readers
that use ``stock:task_queue:{p}`` and ``stock:task:{id}`` keep working.  Every Lua
script receives the fixed keys in ``KEYS[1..15]`` (:func:`fixed_keys`) and
its own task/execution keys after them; keys that depend on data read inside a script
(the id a claim pops, a task's execution) are built by the Lua prelude
:func:`lua_prelude` generates from the templates below, so the layout is written down
only here.  (Because of that, stockq needs a standalone Redis or
a single-slot deployment, not a sharded Redis Cluster.)

| key | type | meaning |
|---|---|---|
| ``{p}:task_queue:{0,1,2}`` | list | ready task ids by priority; LPUSH in, RPOP out |
| ``{p}:parked`` | zset | route -> best score of its parked tasks (routes with some) |
| ``{p}:parked:{route}`` | zset | tasks a worker could not run, for one that can (below) |
| ``{p}:task:{id}`` | hash | the task; expires ``retention`` after it ends |
| ``{p}:task:{id}:dependents`` | set | waiters of a schema 1 task (schema 2: its field) |
| ``{p}:execution:{id}`` | hash | a batch of tasks with O(1) counters |
| ``{p}:execution:{id}:tasks`` | list | the execution's task ids, in submission order |
| ``{p}:running_tasks`` | set | ids being executed (kept for compatibility) |
| ``{p}:leases`` | zset | task id -> lease expiry (ms) |
| ``{p}:delayed`` | zset | task id -> next_run_at (ms): retry backoff |
| ``{p}:doorbell`` | list | one token per enqueue; idle supervisors block on it |
| ``{p}:dedup:{sha1}`` | string | id of the task doing that work while it is active |
| ``{p}:index:all`` | zset | every task id -> created (ms) |
| ``{p}:index:status:{status}`` | zset | task id -> time it entered that status (ms) |
| ``{p}:index:plugin:{name}`` | zset | task id -> created (ms) |
| ``{p}:index:executions`` | zset | execution id -> created (ms) |
| ``{p}:index:plugins`` | set | plugin names that have a plugin index (for cleanup) |
| ``{p}:stats`` | hash | counters: enqueued, completed, failed, ... |
| ``{p}:workers`` | zset | worker id -> last heartbeat (ms) |
| ``{p}:worker:{id}`` | hash | a pool's heartbeat (host, pid, plugins, queues, ...); TTL |
| ``{p}:audit:tasks`` | list | audit outbox: one JSON row per attempt end, newest first |
| ``{p}:audit:executions`` | list | audit outbox: one JSON row per execution end |
| ``{p}:audit:flusher`` | string | which process flushes the outbox to ClickHouse; TTL |
| ``{p}:schedulers`` | zset | scheduler id -> last heartbeat (ms) |
| ``{p}:scheduler:{id}`` | hash | a scheduler's heartbeat (host, pid, jobs, ...); TTL |
| ``{p}:apis`` | zset | sidecar id -> last heartbeat (ms) |
| ``{p}:api:{id}`` | hash | a sidecar's heartbeat (host, pid, url, ...); TTL |
| ``{p}:schedule:{job}`` | hash | a job's state: since, missed_until, its last fire |
| ``{p}:schedule:{job}:history`` | list | the job's latest fires (JSON), newest first, trimmed |
| ``{p}:schedule:{job}:slot:{ts}`` | string | the outcome of the slot at ``ts`` (epoch s); TTL |
| ``{p}:schedule:{job}:lock:{ts}`` | string | which scheduler is firing that slot; short TTL |
| ``{p}:schedule_settings`` | hash | schedule edits made at run time (app/scheduler/overrides.py) |
| ``{p}:groups`` | hash | plugin groups made at run time: group id -> JSON (app/groups.py) |
| ``{p}:calendar:{exchange}`` | hash | cached trading calendar (open days, source, fetched_at) |
| ``{p}:quota:{digest}:{api}`` | zset | TuShare calls admitted in the last minute (token digest) |
| ``{p}:events`` | channel | live events, pub/sub (nothing stored): app/api/events.py |

Capability routing: a worker's claim takes only tasks whose plugin it runs and whose named
queue it serves (lib.lua: can_run).  A ready task it cannot run is *parked* in
``{p}:parked:{route}`` (``route`` is ``queue:plugin``; score priority * 1e13 + the stats
counter ``parked``, so priority then parking order) and ``{p}:parked`` keeps, per route,
the best score waiting there: a worker's claim looks there first (one EXISTS when
nothing is parked) for a route it serves.
"""

from __future__ import annotations

from dataclasses import dataclass

PRIORITIES = (0, 1, 2)
DOORBELL_MAX = 1000  # tokens kept on the doorbell list when nobody listens
DEFAULT_QUEUE = "default"  # the named queue of a task that names none
PARK_PRIORITY_SCALE = 10**13  # a parked task's score: priority * this + a sequence


def route_of(queue: str, plugin: str) -> str:
    """What a parked task waits for: a worker serving ``queue`` that runs ``plugin``."""
    return f"{queue or DEFAULT_QUEUE}:{plugin}"


def split_route(route: str) -> tuple[str, str]:
    """``(queue, plugin)`` of a route (queue names have no ``:``)."""
    queue, _, plugin = route.partition(":")
    return queue, plugin


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "stock"

    # ---- templates (the only place the layout is spelled out) ----
    def queue(self, priority: int) -> str:
        return f"{self.prefix}:task_queue:{priority}"

    def task(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    def dependents(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}:dependents"

    def execution(self, execution_id: str) -> str:
        return f"{self.prefix}:execution:{execution_id}"

    def execution_tasks(self, execution_id: str) -> str:
        return f"{self.prefix}:execution:{execution_id}:tasks"

    def dedup(self, digest: str) -> str:
        return f"{self.prefix}:dedup:{digest}"

    def status_index(self, status: str) -> str:
        return f"{self.prefix}:index:status:{status}"

    def plugin_index(self, plugin: str) -> str:
        return f"{self.prefix}:index:plugin:{plugin}"

    def parked(self, route: str) -> str:
        return f"{self.prefix}:parked:{route}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    def scheduler(self, scheduler_id: str) -> str:
        return f"{self.prefix}:scheduler:{scheduler_id}"

    def api(self, api_id: str) -> str:
        return f"{self.prefix}:api:{api_id}"

    def schedule(self, job: str) -> str:
        return f"{self.prefix}:schedule:{job}"

    def schedule_history(self, job: str) -> str:
        return f"{self.prefix}:schedule:{job}:history"

    def schedule_slot(self, job: str, slot: int) -> str:
        return f"{self.prefix}:schedule:{job}:slot:{slot}"

    def schedule_lock(self, job: str, slot: int) -> str:
        return f"{self.prefix}:schedule:{job}:lock:{slot}"

    def calendar(self, exchange: str) -> str:
        return f"{self.prefix}:calendar:{exchange}"

    def quota(self, digest: str, api: str) -> str:
        return f"{self.prefix}:quota:{digest}:{api}"

    @property
    def events(self) -> str:
        """The pub/sub channel of live events (a channel, not a key: nothing is stored)."""
        return f"{self.prefix}:events"

    @property
    def schedulers(self) -> str:
        return f"{self.prefix}:schedulers"

    @property
    def schedule_settings(self) -> str:
        return f"{self.prefix}:schedule_settings"

    @property
    def groups(self) -> str:
        return f"{self.prefix}:groups"

    @property
    def apis(self) -> str:
        return f"{self.prefix}:apis"

    @property
    def queues(self) -> list[str]:
        return [self.queue(p) for p in PRIORITIES]

    @property
    def running(self) -> str:
        return f"{self.prefix}:running_tasks"

    @property
    def leases(self) -> str:
        return f"{self.prefix}:leases"

    @property
    def delayed(self) -> str:
        return f"{self.prefix}:delayed"

    @property
    def doorbell(self) -> str:
        return f"{self.prefix}:doorbell"

    @property
    def all_index(self) -> str:
        return f"{self.prefix}:index:all"

    @property
    def execution_index(self) -> str:
        return f"{self.prefix}:index:executions"

    @property
    def plugin_names(self) -> str:
        return f"{self.prefix}:index:plugins"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    @property
    def parked_index(self) -> str:
        return f"{self.prefix}:parked"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def audit_tasks(self) -> str:
        return f"{self.prefix}:audit:tasks"

    @property
    def audit_executions(self) -> str:
        return f"{self.prefix}:audit:executions"

    @property
    def audit_flusher(self) -> str:
        return f"{self.prefix}:audit:flusher"


FIXED_LUA_NAMES = (
    "K_QUEUE0",
    "K_QUEUE1",
    "K_QUEUE2",
    "K_RUNNING",
    "K_LEASES",
    "K_DELAYED",
    "K_DOORBELL",
    "K_ALL",
    "K_EXECUTIONS",
    "K_PLUGINS",
    "K_STATS",
    "K_WORKERS",
    "K_AUDIT",
    "K_AUDIT_EXECUTIONS",
    "K_PARKED",
)


def fixed_keys(keys: Keys) -> list[str]:
    """The keys every script receives first, in ``KEYS[1..len(FIXED_LUA_NAMES)]``."""
    return [
        *keys.queues,
        keys.running,
        keys.leases,
        keys.delayed,
        keys.doorbell,
        keys.all_index,
        keys.execution_index,
        keys.plugin_names,
        keys.stats,
        keys.workers,
        keys.audit_tasks,
        keys.audit_executions,
        keys.parked_index,
    ]


def lua_prelude() -> str:
    """Lua definitions every script starts with.

    The fixed keys are bound from ``KEYS``; builders for keys named by data the script
    reads (task ids, execution ids) mirror the templates of :class:`Keys` and use
    ``PREFIX``, which every script receives as ``ARGV[1]``.
    """
    k = Keys(prefix="\x00")

    def builder(name: str, template: str) -> str:
        head, _, tail = template.partition("\x01")
        head = head.replace("\x00", "")
        return f"local function {name}(id) return PREFIX .. '{head}' .. id .. '{tail}' end\n"

    lines = [f"local {name} = KEYS[{i}]\n" for i, name in enumerate(FIXED_LUA_NAMES, 1)]
    lines += [
        "local PREFIX = ARGV[1]\n",
        f"local EVENTS = PREFIX .. '{k.events.replace(chr(0), '')}'\n",
        f"local FIXED = {len(FIXED_LUA_NAMES)}\n",
        "local K_QUEUES = {K_QUEUE0, K_QUEUE1, K_QUEUE2}\n",
        builder("k_task", k.task("\x01")),
        builder("k_dependents", k.dependents("\x01")),
        builder("k_execution", k.execution("\x01")),
        builder("k_execution_tasks", k.execution_tasks("\x01")),
        builder("k_status_index", k.status_index("\x01")),
        builder("k_plugin_index", k.plugin_index("\x01")),
        builder("k_dedup", k.dedup("\x01")),
        builder("k_parked", k.parked("\x01")),
        f"local DOORBELL_MAX = {DOORBELL_MAX}\n",
        f"local DEFAULT_QUEUE = '{DEFAULT_QUEUE}'\n",
        f"local PARK_SCALE = {PARK_PRIORITY_SCALE}\n",
    ]
    return "".join(lines)
