-- Shared helpers, inlined after the key prelude (app/keys.py) in every script.
--
-- Every script receives:
--   KEYS[1..FIXED]  the fixed keys (app/keys.py: fixed_keys), bound to K_* names
--   ARGV[1]      key prefix (to build keys named by data read inside the script)
--   ARGV[2]      now, epoch milliseconds (the caller's clock, so tests can step it)
--   ARGV[3]      now as an ISO 8601 string (Lua in Redis cannot format dates)
-- Checks come before writes: Redis does not roll back a script that errors halfway.

-- The task hash layout version.  2: a task's dependents are the comma-separated ids in
-- its own `dependents` field (written with it), not a {p}:task:{id}:dependents set.
local TASK_SCHEMA = '2'
local NOW = tonumber(ARGV[2])
local NOW_ISO = ARGV[3]
local TERMINAL = {completed = true, failed = true, cancelled = true}
local ACTIVE = {pending = true, running = true, retrying = true}

local function fmt_int(n)
    return string.format('%d', n)
end

local function reject(code, message)
    error({err = 'STOCKQ ' .. code .. ' ' .. message})
end

local function prio_of(raw)
    local p = tonumber(raw)
    if p == nil or p < 0 or p > 2 then
        return 1
    end
    return math.floor(p)
end

-- The status index move that accompanies every status change, and its live event
-- ('<status> <task id>' on the events channel, app/api/events.py: a PUBLISH costs well
-- under a microsecond, stores nothing, and nobody needs to listen).
local function move_status(id, old, new)
    if old and old ~= '' and old ~= new then
        redis.call('ZREM', k_status_index(old), id)
    end
    redis.call('ZADD', k_status_index(new), NOW, id)
    redis.call('PUBLISH', EVENTS, new .. ' ' .. id)
end

local function push_doorbell()
    redis.call('LPUSH', K_DOORBELL, '1')
    redis.call('LTRIM', K_DOORBELL, 0, DOORBELL_MAX - 1)
end

-- Make a task claimable.  front=true puts it next in line (it already waited).
local function push_ready(id, priority, front)
    if front then
        redis.call('RPUSH', K_QUEUES[priority + 1], id)
    else
        redis.call('LPUSH', K_QUEUES[priority + 1], id)
    end
    push_doorbell()
end

-- Lease check shared by every transition a supervisor makes for a running task.
-- Further field names (...) are read in the same HMGET; returns the values, t[3] on.
local function load_owned(key, id, token, ...)
    local t = redis.call('HMGET', key, 'status', 'lease_token', ...)
    if not t[1] then
        reject('not_found', 'task ' .. id .. ' does not exist')
    end
    if t[1] ~= 'running' then
        reject('illegal_transition', 'task ' .. id .. ' is ' .. t[1] .. ', not running')
    end
    if t[2] ~= token then
        reject('stale_lease', 'task ' .. id .. ' is owned by a newer attempt')
    end
    return t
end

local SPEC_FIELDS = {
    'plugin_name', 'task_type', 'trade_dates', 'start_date', 'end_date', 'params',
    'priority', 'timeout_seconds', 'max_attempts', 'user_id', 'username', 'data_source',
    'ts_code', 'trigger', 'retry_of', 'dedup_key', 'depends_on', 'memory_limit_mb',
    'queue',
}

-- Write a new pending task hash and its indexes (not its queue entry).
-- spec: table of strings (SPEC_FIELDS plus task_id).
local function create_task(spec, execution_id)
    local id = spec['task_id']
    local h = {
        'task_id', id, 'schema', TASK_SCHEMA, 'status', 'pending', 'progress', '0',
        'records_processed', '0', 'error_message', '', 'created_at', NOW_ISO,
        'updated_at', NOW_ISO, 'started_at', '', 'completed_at', '', 'attempt', '0',
        'next_run_at', '', 'last_error_type', '', 'deadline_at', '',
        'execution_id', execution_id or '', 'user_id', '', 'username', '',
    }
    for _, f in ipairs(SPEC_FIELDS) do
        local v = spec[f]
        if v ~= nil and v ~= '' and v ~= cjson.null then
            h[#h + 1] = f
            h[#h + 1] = tostring(v)
        end
    end
    local key = k_task(id)
    redis.call('HSET', key, unpack(h))
    local plugin = spec['plugin_name']
    redis.call('ZADD', K_ALL, NOW, id)
    redis.call('ZADD', k_plugin_index(plugin), NOW, id)
    redis.call('SADD', K_PLUGINS, plugin)
    redis.call('ZADD', k_status_index('pending'), NOW, id)
    redis.call('PUBLISH', EVENTS, 'pending ' .. id)
    redis.call('HINCRBY', K_STATS, 'enqueued', 1)
    if spec['dedup_key'] and spec['dedup_key'] ~= '' then
        redis.call('SET', k_dedup(spec['dedup_key']), id, 'NX')
    end
    return key
end

-- Make `id` wait for `deps` (ids of tasks created in the same call or already active):
-- `id` joins each one's `dependents` field.
local function add_dependencies(id, deps)
    local waiting = 0
    for _, dep in ipairs(deps) do
        local dk = k_task(dep)
        local cur = redis.call('HGET', dk, 'dependents')
        redis.call('HSET', dk, 'dependents', cur and (cur .. ',' .. id) or id)
        waiting = waiting + 1
    end
    if waiting > 0 then
        redis.call('HSET', k_task(id), 'waiting', waiting)
    end
    return waiting
end

local function bump_stats(field, plugin)
    redis.call('HINCRBY', K_STATS, field, 1)
    if plugin then
        redis.call('HINCRBY', K_STATS, field .. ':' .. plugin, 1)
    end
end

-- Task duration histogram: every attempt that ends in complete.lua or fail.lua counts in
-- the stats hash: duration_bucket:<le> for the smallest bucket (seconds) it fits
-- (non-cumulative counts; /metrics makes them cumulative, and their total is the
-- count) and duration_sum_ms.  The bounds must match DURATION_BUCKETS in app/api/health.py.
local DURATION_BUCKETS = {
    {100, '0.1'}, {500, '0.5'}, {1000, '1'}, {5000, '5'}, {10000, '10'}, {30000, '30'},
    {60000, '60'}, {300000, '300'}, {900000, '900'}, {3600000, '3600'},
}

local function observe_duration(ms)
    if ms < 0 then
        ms = 0  -- the claiming and the ending host's clocks disagree
    end
    local le = '+Inf'
    for _, b in ipairs(DURATION_BUCKETS) do
        if ms <= b[1] then
            le = b[2]
            break
        end
    end
    redis.call('HINCRBY', K_STATS, 'duration_bucket:' .. le, 1)
    redis.call('HINCRBY', K_STATS, 'duration_sum_ms', fmt_int(ms))
end

-- The audit outbox (app/audit.py flushes it to ClickHouse).  One row per attempt end
-- (completed, failed, retrying -- a retry scheduled, after a timeout or a lost worker
-- too -- and cancelled) and per execution end, written by the script that makes the
-- change.  A row is a JSON array in the order of app/audit.py TASK_ROW / EXECUTION_ROW;
-- its last value, the event time in ms, is the ClickHouse version.
-- The task fields an audit row reads, in this order: a caller that read them already
-- (in its load_owned) passes the values to save a read.
local AUDIT_FIELDS = {
    'attempt', 'execution_id', 'plugin_name', 'task_type', 'records_processed',
    'trade_dates', 'priority', 'trigger', 'worker', 'created_at', 'started_at', 'started_ms',
}

local function audit_task(id, status, error_type, error_message, t)
    t = t or redis.call('HMGET', k_task(id), unpack(AUDIT_FIELDS))
    local started = tonumber(t[12])
    redis.call('LPUSH', K_AUDIT, cjson.encode({id, t[1] or '0', t[2] or '', t[3] or '',
        t[4] or '', status, error_type or '', string.sub(error_message or '', 1, 2000),
        t[5] or '0', t[6] or '', t[7] or '', t[8] or '', t[9] or '', t[10] or '',
        t[11] or '', NOW_ISO, started and fmt_int(NOW - started) or '', fmt_int(NOW)}))
end

-- Execution counters: O(1) per task end; ends the execution when all tasks ended.
local function count_in_execution(execution_id, status, retention)
    if not execution_id or execution_id == '' then
        return
    end
    local ek = k_execution(execution_id)
    if redis.call('EXISTS', ek) == 0 then
        return
    end
    redis.call('HINCRBY', ek, status .. '_plugins', 1)
    local e = redis.call('HMGET', ek, 'total_plugins', 'completed_plugins', 'failed_plugins',
        'cancelled_plugins', 'status')
    local total, done_ok = tonumber(e[1]) or 0, tonumber(e[2]) or 0
    local failed, cancelled = tonumber(e[3]) or 0, tonumber(e[4]) or 0
    if done_ok + failed + cancelled >= total and not TERMINAL[e[5]] then
        local final = 'completed'
        if failed > 0 then
            final = 'failed'
        elseif cancelled > 0 then
            final = 'cancelled'
        end
        redis.call('HSET', ek, 'status', final, 'completed_at', NOW_ISO, 'updated_at', NOW_ISO)
        local x = redis.call('HMGET', ek, 'trigger_type', 'group_name', 'plugins',
            'created_at', 'started_at')
        redis.call('LPUSH', K_AUDIT_EXECUTIONS, cjson.encode({execution_id, final,
            x[1] or '', x[2] or '', x[3] or '[]', fmt_int(total), fmt_int(done_ok),
            fmt_int(failed), fmt_int(cancelled), x[4] or '', x[5] or '', NOW_ISO,
            fmt_int(NOW)}))
        redis.call('EXPIRE', ek, retention)
        redis.call('EXPIRE', k_execution_tasks(execution_id), retention)
        redis.call('ZADD', K_EXECUTIONS, NOW, execution_id)
    end
end

-- What finish reads of a task (a caller that read them already passes them: `known`).
-- The output of the attempt that ends (app/worker/output.py): its masked last bytes, how
-- many it printed and its attempt, appended to the fields `f` written with the outcome.
-- An attempt that printed nothing removes what an earlier one left (`clear`).
local function output_fields(key, f, text, size, attempt, clear)
    if text and text ~= '' then
        f[#f + 1] = 'output'
        f[#f + 1] = text
        f[#f + 1] = 'output_bytes'
        f[#f + 1] = size
        f[#f + 1] = 'output_attempt'
        f[#f + 1] = attempt
    elseif clear then
        redis.call('HDEL', key, 'output', 'output_bytes', 'output_attempt')
    end
    return f
end

local FINISH_FIELDS = {
    'status', 'execution_id', 'dedup_key', 'plugin_name', 'dependents', 'schema',
}

-- The ids of the tasks waiting for task `tid` (t: its FINISH_FIELDS values); takes
-- them out of a schema 1 dependents set (a task written before the field existed).
local function dependents_of(tid, t)
    local deps = {}
    if t[5] then
        for dep in string.gmatch(t[5], '[^,]+') do
            deps[#deps + 1] = dep
        end
    end
    if t[6] == '1' then
        local dkey = k_dependents(tid)
        for _, dep in ipairs(redis.call('SMEMBERS', dkey)) do
            deps[#deps + 1] = dep
        end
        redis.call('DEL', dkey)
    end
    return deps
end

-- End a task for good.  The caller has validated the transition and taken the task
-- out of its ready list or stock:delayed (a running task leaves the lease structures
-- here).  Dependents of a
-- completed task are released; dependents of a task that did not complete end
-- `cancelled` with last_error_type=upstream_failed (transitively).
-- Optional, for the task `id` itself (saving reads and a write): `known`, its
-- FINISH_FIELDS values as the caller read them in this script (and, as element 7, the
-- AUDIT_FIELDS values as they will be after `extra` is written), and `extra`, more
-- field/value pairs written with the status.
local function finish(id, status, error_type, error_message, retention, known, extra)
    local stack = {{id, status, error_type, error_message}}
    local ended = 0
    while #stack > 0 do
        local item = table.remove(stack)
        local tid, st = item[1], item[2]
        local key = k_task(tid)
        local t, audit_values = known, nil
        if t then
            known = nil
            audit_values = t[7]
        else
            t = redis.call('HMGET', key, unpack(FINISH_FIELDS))
        end
        if t[1] and not TERMINAL[t[1]] then
            local f = extra or {}
            extra = nil
            f[#f + 1] = 'status'
            f[#f + 1] = st
            f[#f + 1] = 'completed_at'
            f[#f + 1] = NOW_ISO
            f[#f + 1] = 'updated_at'
            f[#f + 1] = NOW_ISO
            if item[3] then
                f[#f + 1] = 'last_error_type'
                f[#f + 1] = item[3]
                f[#f + 1] = 'error_message'
                f[#f + 1] = item[4] or ''
            end
            redis.call('HSET', key, unpack(f))
            audit_task(tid, st, item[3], item[4], audit_values)
            redis.call('HDEL', key, 'lease_token', 'cancel_requested', 'waiting', 'dependents')
            if t[1] == 'running' then
                redis.call('SREM', K_RUNNING, tid)
                redis.call('ZREM', K_LEASES, tid)
            end
            move_status(tid, t[1], st)
            if t[3] and t[3] ~= '' then
                local dk = k_dedup(t[3])
                if redis.call('GET', dk) == tid then
                    redis.call('DEL', dk)
                end
            end
            redis.call('EXPIRE', key, retention)
            bump_stats(st, t[4])
            count_in_execution(t[2], st, retention)
            ended = ended + 1
            for _, dep in ipairs(dependents_of(tid, t)) do
                local dk2 = k_task(dep)
                local d = redis.call('HMGET', dk2, 'status', 'priority')
                if d[1] == 'pending' then
                    if st == 'completed' then
                        if redis.call('HINCRBY', dk2, 'waiting', -1) <= 0 then
                            redis.call('HDEL', dk2, 'waiting')
                            push_ready(dep, prio_of(d[2]), false)
                        end
                    else
                        stack[#stack + 1] = {dep, 'cancelled', 'upstream_failed',
                            'upstream task ' .. tid .. ' ended ' .. st}
                    end
                end
            end
        end
    end
    return ended
end

-- Move retrying tasks whose backoff has elapsed from stock:delayed to the front of
-- their ready queue (at most `limit`).  Returns how many were promoted.
local function promote_due(limit)
    local promoted = 0
    local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', NOW, 'LIMIT', 0, limit)
    for _, id in ipairs(due) do
        redis.call('ZREM', K_DELAYED, id)
        local key = k_task(id)
        local t = redis.call('HMGET', key, 'status', 'priority')
        if t[1] == 'retrying' then
            redis.call('HSET', key, 'status', 'pending', 'next_run_at', '', 'updated_at', NOW_ISO)
            move_status(id, 'retrying', 'pending')
            push_ready(id, prio_of(t[2]), true)
            promoted = promoted + 1
        end
    end
    return promoted
end

-- Capability routing.  A worker's claim carries what it can run as one string,
-- ',plugin,...,@queue,...,' (app/worker/capabilities.py); '' claims anything (callers
-- that run no plugins: tests, benchmarks).  A task runs on a worker that lists its
-- plugin and serves its named queue (DEFAULT_QUEUE when it names none).
local function can_run(can, plugin, queue)
    if can == '' or not plugin then
        return true  -- no plugin at all: whoever takes it reports plugin_not_found
    end
    if queue == nil or queue == false or queue == '' then
        queue = DEFAULT_QUEUE
    end
    return string.find(can, ',' .. plugin .. ',', 1, true) ~= nil
        and string.find(can, ',@' .. queue .. ',', 1, true) ~= nil
end

local function route_of(plugin, queue)
    if queue == nil or queue == false or queue == '' then
        queue = DEFAULT_QUEUE
    end
    return queue .. ':' .. plugin
end

local function can_serve(can, route)
    local sep = string.find(route, ':', 1, true)
    return can_run(can, string.sub(route, sep + 1), string.sub(route, 1, sep - 1))
end

-- Keep K_PARKED's score of `route` at the best score left in its set (or drop it).
local function reindex_parked(route)
    local best = redis.call('ZRANGE', k_parked(route), 0, 0, 'WITHSCORES')
    if best[2] then
        redis.call('ZADD', K_PARKED, best[2], route)
    else
        redis.call('ZREM', K_PARKED, route)
    end
end

-- Set aside a ready task the claiming worker cannot run, for a worker that can; it
-- stays `pending` (tasks parked earlier keep their place: the score orders by priority,
-- then by the stats counter `parked`, one number per task ever parked).
local function park(id, route, priority)
    local score = priority * PARK_SCALE + redis.call('HINCRBY', K_STATS, 'parked', 1)
    redis.call('ZADD', k_parked(route), score, id)
    local best = tonumber(redis.call('ZSCORE', K_PARKED, route))
    if not best or score < best then
        redis.call('ZADD', K_PARKED, score, route)
    end
end

-- Take `id` out of its parked set (cancel, purge); true when it was there.
local function unpark(id, route)
    if redis.call('ZREM', k_parked(route), id) == 1 then
        reindex_parked(route)
        return true
    end
    return false
end

-- The parked route this worker can serve whose best task comes first, and that task's
-- priority; nil when none (one EXISTS when nothing is parked: the usual case).
local function first_parked(can)
    if can == '' or redis.call('EXISTS', K_PARKED) == 0 then
        return nil, 3
    end
    local routes = redis.call('ZRANGE', K_PARKED, 0, 99, 'WITHSCORES')
    for i = 1, #routes, 2 do
        if can_serve(can, routes[i]) then
            return routes[i], math.floor(tonumber(routes[i + 1]) / PARK_SCALE)
        end
    end
    return nil, 3
end

local CLAIM_FIELDS = {'status', 'waiting', 'schema', 'plugin_name',
    'timeout_seconds', 'execution_id', 'attempt', 'checkpoint',
    'records_processed', 'task_type', 'trade_dates', 'start_date', 'end_date',
    'params', 'memory_limit_mb', 'ts_code', 'data_source', 'queue'}

-- Mark the pending task `id` (t: its CLAIM_FIELDS values) running under a lease for
-- `worker` and return what claim_next returns.
local function take(id, key, t, worker, token, lease_ms, work)
    if not t[3] then
        -- pushed by a producer of the original format: index it now, and
        -- keep it while it runs if that producer gave it a TTL (a task
        -- of ours has none before it ends)
        redis.call('PERSIST', key)
        redis.call('ZADD', K_ALL, NOW, id)
        if t[4] then
            redis.call('ZADD', k_plugin_index(t[4]), NOW, id)
            redis.call('SADD', K_PLUGINS, t[4])
        end
    end
    local timeout_ms = (tonumber(t[5]) or 3600) * 1000
    local attempt = fmt_int((tonumber(t[7]) or 0) + 1)
    redis.call('HSET', key, 'attempt', attempt,
        'status', 'running', 'started_at', NOW_ISO,
        'started_ms', fmt_int(NOW), 'updated_at', NOW_ISO, 'worker', worker,
        'lease_token', token, 'deadline_at', fmt_int(NOW + timeout_ms),
        'progress', '0', 'next_run_at', '')
    redis.call('SADD', K_RUNNING, id)
    redis.call('ZADD', K_LEASES, NOW + lease_ms, id)
    move_status(id, 'pending', 'running')
    if t[6] and t[6] ~= '' then
        local ek = k_execution(t[6])
        if redis.call('HGET', ek, 'status') == 'pending' then
            redis.call('HSET', ek, 'status', 'running', 'started_at', NOW_ISO,
                'updated_at', NOW_ISO)
        end
    end
    if work then
        return {id, t[4], attempt, t[6], t[5], t[8], t[9], t[10], t[11], t[12],
            t[13], t[14], t[15], t[16], t[17]}
    end
    return redis.call('HGETALL', key)
end

-- Promote due delayed tasks, then take the next ready task in priority order (0, 1,
-- 2) that this worker can run (`can`, see can_run) and mark it running under a lease.
-- At each priority, tasks other workers parked for workers like this one come first
-- (they are older than what is still queued); a queued task this worker cannot run is
-- parked (at most MAX_PARK per call) and the doorbell rung for the others.  Stale
-- entries (cancelled, deleted, expired, or still waiting on dependencies) are dropped.
-- Returns the task's hash (flat list) or false; with `work` true, only the values of
-- the fields a worker needs to run it, in this order (app/models.py: WORK_FIELDS):
-- task_id, plugin_name, attempt (the new one), execution_id, timeout_seconds,
-- checkpoint, records_processed, task_type, trade_dates, start_date, end_date, params,
-- memory_limit_mb, ts_code, data_source (false when absent).
local MAX_PARK = 100

local function claim_next(worker, token, lease_ms, promote_limit, work, can)
    promote_due(promote_limit)
    can = can or ''
    local skipped, parked = 0, 0
    local route, route_prio = first_parked(can)
    for p = 1, 3 do
        while route and route_prio < p do
            local popped = redis.call('ZPOPMIN', k_parked(route))
            reindex_parked(route)
            local id = popped[1]
            if id then
                local key = k_task(id)
                local t = redis.call('HMGET', key, unpack(CLAIM_FIELDS))
                if t[1] == 'pending' and (tonumber(t[2]) or 0) <= 0 then
                    return take(id, key, t, worker, token, lease_ms, work)
                end
                skipped = skipped + 1
                if skipped >= 1000 then
                    return false
                end
            end
            route, route_prio = first_parked(can)
        end
        while true do
            local id = redis.call('RPOP', K_QUEUES[p])
            if not id then
                break
            end
            local key = k_task(id)
            local t = redis.call('HMGET', key, unpack(CLAIM_FIELDS))
            if t[1] == 'pending' and (tonumber(t[2]) or 0) <= 0 then
                if can_run(can, t[4], t[18]) then
                    if parked > 0 then
                        push_doorbell()
                    end
                    return take(id, key, t, worker, token, lease_ms, work)
                end
                park(id, route_of(t[4], t[18]), p - 1)
                parked = parked + 1
                if parked >= MAX_PARK then
                    push_doorbell()
                    return false
                end
            else
                -- stale entry (cancelled, deleted, expired, or still waiting): drop it
                skipped = skipped + 1
                if skipped >= 1000 then
                    break
                end
            end
        end
        if skipped >= 1000 then
            break
        end
    end
    if parked > 0 then
        push_doorbell()
    end
    return false
end
