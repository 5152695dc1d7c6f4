-- claim: promote due delayed tasks, then pop the next ready task in priority order
-- (0, 1, 2) and mark it running under a lease, in one step: a supervisor that dies
-- after this script has its lease expire and the reaper requeues the task.
--
-- KEYS[1..11]  fixed keys (app/keys.py)
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      worker id
-- ARGV[5]      lease token for this attempt (unique per claim)
-- ARGV[6]      lease length, ms
-- ARGV[7]      max delayed tasks to promote in this call
-- Returns      the claimed task hash as a flat field/value list, or false (nothing ready).

local worker, token = ARGV[4], ARGV[5]
local lease_ms, promote_limit = tonumber(ARGV[6]), tonumber(ARGV[7])

local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', NOW, 'LIMIT', 0, promote_limit)
for _, id in ipairs(due) do
    redis.call('ZREM', K_DELAYED, id)
    local key = k_task(id)
    local t = redis.call('HMGET', key, 'status', 'priority')
    if t[1] == 'retrying' then
        redis.call('HSET', key, 'status', 'pending', 'next_run_at', '', 'updated_at', NOW_ISO)
        move_status(id, 'retrying', 'pending')
        push_ready(id, prio_of(t[2]), true)
    end
end

local skipped = 0
for p = 1, 3 do
    while true do
        local id = redis.call('RPOP', K_QUEUES[p])
        if not id then
            break
        end
        local key = k_task(id)
        local t = redis.call('HMGET', key, 'status', 'waiting', 'schema', 'plugin_name',
            'timeout_seconds', 'execution_id')
        if t[1] == 'pending' and (tonumber(t[2]) or 0) <= 0 then
            if not t[3] then
                -- pushed by a producer of the original format: index it now
                redis.call('ZADD', K_ALL, NOW, id)
                if t[4] then
                    redis.call('ZADD', k_plugin_index(t[4]), NOW, id)
                    redis.call('SADD', K_PLUGINS, t[4])
                end
            end
            local timeout_ms = (tonumber(t[5]) or 3600) * 1000
            redis.call('HINCRBY', key, 'attempt', 1)
            redis.call('HSET', key, 'status', 'running', 'started_at', NOW_ISO,
                'started_ms', fmt_int(NOW), 'updated_at', NOW_ISO, 'worker', worker,
                'lease_token', token, 'deadline_at', fmt_int(NOW + timeout_ms),
                'progress', '0', 'next_run_at', '')
            redis.call('PERSIST', key)
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
            return redis.call('HGETALL', key)
        end
        -- stale entry (cancelled, deleted, expired, or still waiting): drop it
        skipped = skipped + 1
        if skipped >= 1000 then
            return false
        end
    end
end
return false
