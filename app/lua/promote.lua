-- promote: move retrying tasks whose backoff has elapsed from stock:delayed back to the
-- front of their ready queue.  A claim does the same before it pops; this script lets
-- a scheduler (or any maintenance loop) do it when no worker is claiming, so queue
-- depths and statuses stay true.  Idempotent.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      max tasks to promote in this call
-- Returns      number of tasks promoted

local promoted = 0
local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[4]))
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
