-- delete: remove an ended task and its index entries now (instead of waiting for
-- retention).  Active tasks must be cancelled first.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py);  KEYS[FIXED+1]  stock:task:{id}
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      task id
-- Returns      1

local key, id = KEYS[FIXED + 1], ARGV[4]
local t = redis.call('HMGET', key, 'status', 'plugin_name')
if not t[1] then
    reject('not_found', 'task ' .. id .. ' does not exist')
end
if not TERMINAL[t[1]] then
    reject('illegal_transition', 'task ' .. id .. ' is ' .. t[1] .. '; cancel it first')
end
redis.call('DEL', key, k_dependents(id))
redis.call('ZREM', k_status_index(t[1]), id)
redis.call('ZREM', K_ALL, id)
if t[2] then
    redis.call('ZREM', k_plugin_index(t[2]), id)
end
return 1
