-- create_execution: create a batch ("execution") of tasks atomically, with optional
-- dependencies between them.  A task with dependencies waits (pending, in no queue)
-- until they complete; the others are claimable at once.  Counters start at zero and
-- are updated by the transitions that end each task.
--
-- Built for large batches (10,000 tasks in one call): the tasks come as flat ARGV
-- records (no per-task JSON), the fields tasks share are sent once per "shape", and
-- every write that can take many members is one command per chunk of CHUNK members
-- (indexes, the execution's task list, the ready queues, the doorbell, the stats).
-- Only the task hash, its dedup key and its dependency sets are written per task.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- KEYS[FIXED+1] stock:execution:{id};  KEYS[FIXED+2]  stock:execution:{id}:tasks
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      execution JSON: execution_id, trigger_type, group_name, date_range, plugins
-- ARGV[5]      shapes JSON: list of shapes, each a list of strings
--              [plugin_name, priority, field1, value1, field2, value2, ...]: the non-empty
--              spec fields (as TaskSpec.to_fields writes them) its tasks share
-- ARGV[6]      n, the number of tasks
-- ARGV[7..6+6n]  n records of 6 strings, in submission order:
--              task id, shape (1-based index into ARGV[5]), params, dedup_key,
--              depends_on (JSON list of task ids), waiting (number of dependencies);
--              '' for a field the task does not have (no params, no dependencies)
-- ARGV[7+6n..] dependency groups, each: task id, count c, then the c ids of the tasks of
--              this batch that wait for it (they go to the task's dependents set)
-- Returns      number of tasks created

local CHUNK = 500 -- members per multi-member command (well inside Lua's unpack limit)
local WIDTH = 6
local FIRST = 7

local ek, tk = KEYS[FIXED + 1], KEYS[FIXED + 2]
local e = cjson.decode(ARGV[4])
local shapes = cjson.decode(ARGV[5])
local n = tonumber(ARGV[6])
local eid = e['execution_id']
if redis.call('EXISTS', ek) == 1 then
    reject('conflict', 'execution ' .. eid .. ' already exists')
end
-- the whole layout is checked before the first write (Redis does not roll back)
if not n or n < 1 or #ARGV < FIRST - 1 + n * WIDTH then
    reject('invalid', 'create_execution: malformed task records')
end
local dep_start = FIRST + n * WIDTH
do
    local i = dep_start
    while i <= #ARGV do
        local c = tonumber(ARGV[i + 1])
        if not c or c < 1 or i + 1 + c > #ARGV then
            reject('invalid', 'create_execution: malformed dependency groups')
        end
        i = i + 2 + c
    end
end
-- per shape: the hash fields every task of it gets (slot 2 takes the task id), their
-- count, its plugin and ready queue
local templates, lens, plugins_of, queues_of = {}, {}, {}, {}
for s, shape in ipairs(shapes) do
    if type(shape[1]) ~= 'string' or shape[1] == '' then
        reject('invalid', 'create_execution: shape ' .. s .. ' has no plugin')
    end
    local h = {
        'task_id', '', 'schema', '1', 'status', 'pending', 'progress', '0',
        'records_processed', '0', 'attempt', '0', 'created_at', NOW_ISO,
        'updated_at', NOW_ISO, 'execution_id', eid,
    }
    for i = 3, #shape do
        h[#h + 1] = shape[i]
    end
    templates[s], lens[s] = h, #h
    plugins_of[s] = shape[1]
    queues_of[s] = prio_of(shape[2]) + 1
end
for i = 0, n - 1 do
    if not templates[tonumber(ARGV[FIRST + i * WIDTH + 1])] then
        reject('invalid', 'create_execution: task ' .. (i + 1) .. ' has an unknown shape')
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

local score = fmt_int(NOW)
local ids, scored = {}, {}          -- ids in order; score, id, score, id, ...
local by_plugin, plugin_list = {}, {}
local ready = {{}, {}, {}}
local ready_count = 0
for i = 0, n - 1 do
    local p = FIRST + i * WIDTH
    local id = ARGV[p]
    local s = tonumber(ARGV[p + 1])
    local params, dedup, depends, waiting = ARGV[p + 2], ARGV[p + 3], ARGV[p + 4], ARGV[p + 5]
    local h, m = templates[s], lens[s]
    h[2] = id
    if params ~= '' then
        h[m + 1], h[m + 2], m = 'params', params, m + 2
    end
    if dedup ~= '' then
        h[m + 1], h[m + 2], m = 'dedup_key', dedup, m + 2
    end
    if depends ~= '' then
        h[m + 1], h[m + 2], m = 'depends_on', depends, m + 2
    end
    if waiting ~= '' then
        h[m + 1], h[m + 2], m = 'waiting', waiting, m + 2
    else
        local r = ready[queues_of[s]]
        r[#r + 1] = id
        ready_count = ready_count + 1
    end
    redis.call('HSET', k_task(id), unpack(h, 1, m))
    if dedup ~= '' then
        redis.call('SET', k_dedup(dedup), id, 'NX')
    end
    ids[i + 1] = id
    scored[2 * i + 1], scored[2 * i + 2] = score, id
    local plugin = plugins_of[s]
    local members = by_plugin[plugin]
    if not members then
        members = {}
        by_plugin[plugin] = members
        plugin_list[#plugin_list + 1] = plugin
    end
    members[#members + 1] = id
end

chunked('ZADD', K_ALL, scored, 2 * CHUNK)
chunked('ZADD', k_status_index('pending'), scored, 2 * CHUNK)
for _, plugin in ipairs(plugin_list) do
    local members = by_plugin[plugin]
    if #members == n then
        chunked('ZADD', k_plugin_index(plugin), scored, 2 * CHUNK)
    else
        local sc = {}
        for j, id in ipairs(members) do
            sc[2 * j - 1], sc[2 * j] = score, id
        end
        chunked('ZADD', k_plugin_index(plugin), sc, 2 * CHUNK)
    end
end
chunked('SADD', K_PLUGINS, plugin_list, CHUNK)
redis.call('HINCRBY', K_STATS, 'enqueued', n)
chunked('RPUSH', tk, ids, CHUNK)

-- dependents sets: SADD k_dependents(dep) waiting ids
local i = dep_start
while i <= #ARGV do
    local dep, c = ARGV[i], tonumber(ARGV[i + 1])
    local dkey = k_dependents(dep)
    for a = i + 2, i + 1 + c, CHUNK do
        local b = a + CHUNK - 1
        if b > i + 1 + c then
            b = i + 1 + c
        end
        redis.call('SADD', dkey, unpack(ARGV, a, b))
    end
    i = i + 2 + c
end

-- ready tasks: one LPUSH per queue (in submission order, as push_ready would), and the
-- doorbell tokens push_ready would leave (at most DOORBELL_MAX) in one LPUSH + LTRIM
for q = 1, 3 do
    chunked('LPUSH', K_QUEUES[q], ready[q], CHUNK)
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
