-- reap: tasks whose lease expired (their supervisor or host died) go back to pending
-- at the front of their queue with last_error_type=worker_lost; the next claim starts
-- attempt+1.  When no attempt is left the task ends `failed` (worker_lost); when a
-- cancel was requested it ends `cancelled`.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      max tasks to reap in this call;  ARGV[5]  retention, seconds
-- Returns      flat list: task_id, outcome ('requeued' | 'failed' | 'cancelled'), ...

local limit, retention = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
local expired = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', NOW, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
    redis.call('ZREM', K_LEASES, id)
    local key = k_task(id)
    local t = redis.call('HMGET', key, 'status', 'attempt', 'max_attempts', 'priority',
        'cancel_requested', 'plugin_name')
    if t[1] ~= 'running' then
        redis.call('SREM', K_RUNNING, id)
    else
        local msg = 'worker lost: lease expired during attempt ' .. (t[2] or '?')
        bump_stats('worker_lost', t[6])
        if t[5] then
            finish(id, 'cancelled', 'cancelled', 'cancelled; ' .. msg, retention)
            out[#out + 1] = id
            out[#out + 1] = 'cancelled'
        elseif (tonumber(t[2]) or 0) >= (tonumber(t[3]) or 1) then
            finish(id, 'failed', 'worker_lost', msg, retention)
            out[#out + 1] = id
            out[#out + 1] = 'failed'
        else
            redis.call('HSET', key, 'status', 'pending', 'last_error_type', 'worker_lost',
                'error_message', msg, 'updated_at', NOW_ISO)
            audit_task(id, 'retrying', 'worker_lost', msg)
            redis.call('HDEL', key, 'lease_token')
            redis.call('SREM', K_RUNNING, id)
            move_status(id, 'running', 'pending')
            push_ready(id, prio_of(t[4]), true)
            out[#out + 1] = id
            out[#out + 1] = 'requeued'
        end
    end
end
return out
