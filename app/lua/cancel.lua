-- cancel: a pending or retrying task leaves its queue (or the set it is parked in) /
-- stock:delayed at once and ends `cancelled` (its dependents too, as upstream_failed);
-- a running task gets cancel_requested=1, which its supervisor sees on its next lease
-- renewal or progress write, kills the attempt and calls acknowledge_cancel.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py);  KEYS[FIXED+1]  stock:task:{id}
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      task id;  ARGV[5]  reason (stored as error_message)
-- ARGV[6]      retention, seconds
-- Returns      'cancelled' or 'cancel_requested'

local key, id = KEYS[FIXED + 1], ARGV[4]
local t = redis.call('HMGET', key, 'status', 'priority', 'plugin_name', 'queue')
if not t[1] then
    reject('not_found', 'task ' .. id .. ' does not exist')
end
if TERMINAL[t[1]] then
    reject('illegal_transition', 'task ' .. id .. ' is already ' .. t[1])
end
if t[1] == 'running' then
    redis.call('HSET', key, 'cancel_requested', '1', 'updated_at', NOW_ISO)
    return 'cancel_requested'
end
if t[1] == 'pending' then
    if not (t[3] and unpark(id, route_of(t[3], t[4]))) then
        redis.call('LREM', K_QUEUES[prio_of(t[2]) + 1], 0, id)
    end
elseif t[1] == 'retrying' then
    redis.call('ZREM', K_DELAYED, id)
else
    reject('illegal_transition', 'task ' .. id .. ' has unknown status ' .. t[1])
end
finish(id, 'cancelled', 'cancelled', ARGV[5], tonumber(ARGV[6]))
return 'cancelled'
