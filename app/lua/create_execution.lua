-- create_execution: create a batch ("execution") of tasks atomically, with optional
-- dependencies between them.  A task with dependencies waits (pending, in no queue)
-- until they complete; the others are claimable at once.  Counters start at zero and
-- are updated by the transitions that end each task.
--
-- Built for large batches (10,000 tasks in one call): tasks come as flat ARGV records
-- (no per-task JSON to decode), the hash fields tasks share are sent once per "shape",
-- and every write that takes many members is one command per CHUNK members (indexes,
-- the execution's task list, the ready queues, the dedup keys, the doorbell, the
-- stats).  Per task there remains its hash: a COPY of an earlier task of the batch and
-- an HSET of its own fields, which include its dependents (lib.lua: TASK_SCHEMA).
-- Everything is checked before the first write: all tasks are created or none.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- KEYS[FIXED+1] stock:execution:{id};  KEYS[FIXED+2]  stock:execution:{id}:tasks
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      execution JSON: execution_id, trigger_type, group_name, date_range, plugins
-- ARGV[5]      shapes JSON: a list of shapes, each a list of strings
--              [plugin_name, priority, field1, value1, field2, value2, ...]: the spec
--              fields (as TaskSpec.to_fields writes them, empty ones left out) that its
--              tasks share, i.e. all but task_id, params and dedup_key
-- ARGV[6]      runs JSON: [shape, count, shape, count, ...]: the shape (1-based index
--              into ARGV[5]) of each task, in submission order, run-length encoded
-- ARGV[7..]    one record per task, in submission order: task id, params, dedup_key,
--              waiting ('' for params and waiting when the task has none); when waiting
--              is a number c > 0 (its dependencies), then also depends_on (JSON list of
--              task ids) and the c ids of the tasks of this batch it waits for
-- Returns      number of tasks created

local CHUNK = 500 -- members per multi-member command, well inside Lua's unpack limit
local FIRST = 7   -- ARGV index of the first task record

local ek, tk = KEYS[FIXED + 1], KEYS[FIXED + 2]
local e = cjson.decode(ARGV[4])
local shapes = cjson.decode(ARGV[5])
local runs = cjson.decode(ARGV[6])
local eid = e['execution_id']
if redis.call('EXISTS', ek) == 1 then
    reject('conflict', 'execution ' .. eid .. ' already exists')
end

local function malformed(what)
    reject('invalid', 'create_execution: malformed ' .. what)
end

-- Check the whole payload before the first write (Redis does not roll back).
-- Per shape: the hash fields its tasks share and their count, the plugin, the queue.
local shared, lens, plugins_of, queues_of = {}, {}, {}, {}
for s, shape in ipairs(shapes) do
    if type(shape[1]) ~= 'string' or shape[1] == '' or #shape % 2 ~= 0 then
        malformed('shape ' .. s)
    end
    local h = {
        'schema', TASK_SCHEMA, 'status', 'pending', 'progress', '0', 'records_processed', '0',
        'attempt', '0', 'created_at', NOW_ISO, 'updated_at', NOW_ISO, 'execution_id', eid,
    }
    for i = 2, #shape do
        if type(shape[i]) ~= 'string' then
            malformed('shape ' .. s)
        end
        if i > 2 then
            h[#h + 1] = shape[i]
        end
    end
    shared[s], lens[s] = h, #h
    plugins_of[s] = shape[1]
    queues_of[s] = prio_of(shape[2]) + 1
end
-- The records, and who waits for whom: a task's dependents are written in its hash.
local in_batch = {}                  -- task id -> true
local dep_list, waiters_of = {}, {}  -- dependency id -> ids of the tasks waiting for it
local n, p = 0, FIRST
for r = 1, #runs, 2 do
    local s, c = runs[r], runs[r + 1]
    if not shared[s] or type(c) ~= 'number' or c < 1 or c % 1 ~= 0 then
        malformed('runs')
    end
    for _ = 1, c do
        local id, waiting = ARGV[p], ARGV[p + 3]
        in_batch[id] = true
        if waiting == '' then
            p = p + 4
        else
            local w = tonumber(waiting)
            if not w or w < 1 or w % 1 ~= 0 then
                malformed('task records')
            end
            for d = p + 5, p + 4 + w do
                local dep = ARGV[d]
                local ws = waiters_of[dep]
                if ws == nil then
                    waiters_of[dep] = id -- one waiter: kept as a string
                    dep_list[#dep_list + 1] = dep
                elseif type(ws) == 'string' then
                    waiters_of[dep] = {ws, id}
                else
                    ws[#ws + 1] = id
                end
            end
            p = p + 5 + w
        end
    end
    n = n + c
end
if n < 1 or p ~= #ARGV + 1 then
    malformed('task records')
end
for _, dep in ipairs(dep_list) do
    if not in_batch[dep] then
        malformed('dependency ' .. dep .. ' (not a task of this execution)')
    end
end

-- cmd key list[a..b] for consecutive slices of `step` items of list
local function chunked(cmd, key, list, step)
    local total = #list
    for a = 1, total, step do
        local b = a + step - 1
        if b > total then
            b = total
        end
        redis.call(cmd, key, unpack(list, a, b))
    end
end

redis.call('HSET', ek, 'execution_id', eid, 'schema', '1', 'status', 'pending',
    'trigger_type', e['trigger_type'] or 'manual', 'group_name', e['group_name'] or '',
    'date_range', e['date_range'] or '', 'plugins', e['plugins'] or '[]',
    'total_plugins', n, 'completed_plugins', 0, 'failed_plugins', 0,
    'cancelled_plugins', 0, 'created_at', NOW_ISO, 'updated_at', NOW_ISO,
    'started_at', '', 'completed_at', '')
redis.call('ZADD', K_EXECUTIONS, NOW, eid)

-- Task hashes: the first task of each shape (and set of own fields) is written in full,
-- its own fields first; the next ones are a COPY of it (which duplicates the encoded
-- hash in one step) and an HSET of their own fields, which replaces all of the copied
-- task's: much cheaper than an HSET of all ~20 fields.  Without COPY (Redis < 6.2), or
-- when a task key exists (it gets the fields written into it), a hash is written in full.
local own = {'task_id', ''}          -- the fields of the task at hand
local full = {}
local source_of = {}                 -- shape -> own fields present -> key to copy
local copy_ok = true

-- Write a task hash in full (own fields first); remember it as the source to copy for
-- its shape and own fields (byp) when it is new.
local function write_full(key, s, byp, present, m)
    if not byp[present] and redis.call('EXISTS', key) == 0 then
        byp[present] = key
    end
    local h, len = shared[s], lens[s]
    for j = 1, m do
        full[j] = own[j]
    end
    for j = 1, len do
        full[m + j] = h[j]
    end
    redis.call('HSET', key, unpack(full, 1, m + len))
end

local score = fmt_int(NOW)
local ids, scored = {}, {}           -- ids in order; score, id, score, id, ...
local ready = {{}, {}, {}}           -- ready ids by queue, in order
local plugin_list, ranges_of = {}, {} -- plugin -> {first, last, first, last, ...} of ids
local dedup_seen, dedup_kv = {}, {}  -- dedup key, id of the first task with that digest
local i = 0
p = FIRST
for r = 1, #runs, 2 do
    local s, c = runs[r], runs[r + 1]
    local ready_q = ready[queues_of[s]]
    local plugin = plugins_of[s]
    local ranges = ranges_of[plugin]
    if not ranges then
        ranges = {}
        ranges_of[plugin] = ranges
        plugin_list[#plugin_list + 1] = plugin
    end
    ranges[#ranges + 1] = i + 1
    ranges[#ranges + 1] = i + c
    local byp = source_of[s]
    if not byp then
        byp = {}
        source_of[s] = byp
    end
    for _ = 1, c do
        local id, params, dedup, waiting = ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3]
        local m, present = 2, 0
        own[2] = id
        if params ~= '' then
            own[3], own[4], m, present = 'params', params, 4, 1
        end
        if dedup ~= '' then
            own[m + 1], own[m + 2], m, present = 'dedup_key', dedup, m + 2, present + 2
        end
        if waiting == '' then
            ready_q[#ready_q + 1] = id
            p = p + 4
        else
            own[m + 1], own[m + 2] = 'depends_on', ARGV[p + 4]
            own[m + 3], own[m + 4], m, present = 'waiting', waiting, m + 4, present + 4
            p = p + 5 + tonumber(waiting)
        end
        local ws = waiters_of[id]
        if ws then
            if type(ws) == 'table' then
                ws = table.concat(ws, ',')
            end
            own[m + 1], own[m + 2], m, present = 'dependents', ws, m + 2, present + 8
        end
        local key, src = k_task(id), byp[present]
        local copied = false
        if src and copy_ok then
            local res = redis.pcall('COPY', src, key)
            if type(res) == 'table' then
                copy_ok = false -- an error reply: no COPY before Redis 6.2
            else
                copied = res == 1 -- 0: the key exists
            end
        end
        if copied then
            redis.call('HSET', key, unpack(own, 1, m))
        else
            write_full(key, s, byp, present, m)
        end
        if dedup ~= '' and not dedup_seen[dedup] then
            dedup_seen[dedup] = true
            dedup_kv[#dedup_kv + 1] = k_dedup(dedup)
            dedup_kv[#dedup_kv + 1] = id
        end
        i = i + 1
        ids[i] = id
        scored[2 * i - 1], scored[2 * i] = score, id
    end
end

-- dedup keys: SET NX each, done as one MSETNX per chunk when none of its keys exists
-- (MSETNX sets all or nothing); a chunk with an existing key is done key by key
for a = 1, #dedup_kv, 2 * CHUNK do
    local b = math.min(a + 2 * CHUNK - 1, #dedup_kv)
    if redis.call('MSETNX', unpack(dedup_kv, a, b)) == 0 then
        for j = a, b, 2 do
            redis.call('SET', dedup_kv[j], dedup_kv[j + 1], 'NX')
        end
    end
end
chunked('ZADD', K_ALL, scored, 2 * CHUNK)
chunked('ZADD', k_status_index('pending'), scored, 2 * CHUNK)
for _, plugin in ipairs(plugin_list) do
    local sc = scored
    if #plugin_list > 1 then
        sc = {}
        local ranges = ranges_of[plugin]
        for r = 1, #ranges, 2 do
            for j = ranges[r], ranges[r + 1] do
                sc[#sc + 1] = score
                sc[#sc + 1] = ids[j]
            end
        end
    end
    chunked('ZADD', k_plugin_index(plugin), sc, 2 * CHUNK)
end
chunked('SADD', K_PLUGINS, plugin_list, CHUNK)
redis.call('HINCRBY', K_STATS, 'enqueued', n)
chunked('RPUSH', tk, ids, CHUNK)
redis.call('PUBLISH', EVENTS, 'execution ' .. eid)  -- one live event for the batch

-- ready tasks: one LPUSH per queue (in submission order, as push_ready would), and the
-- doorbell tokens push_ready would leave (at most DOORBELL_MAX) in one LPUSH + LTRIM
local ready_count = 0
for q = 1, 3 do
    chunked('LPUSH', K_QUEUES[q], ready[q], CHUNK)
    ready_count = ready_count + #ready[q]
end
if ready_count > 0 then
    local tokens = {}
    for j = 1, math.min(ready_count, DOORBELL_MAX) do
        tokens[j] = '1'
    end
    chunked('LPUSH', K_DOORBELL, tokens, 4000) -- one LPUSH while DOORBELL_MAX <= 4000
    redis.call('LTRIM', K_DOORBELL, 0, DOORBELL_MAX - 1)
end
return n
