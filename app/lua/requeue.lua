-- requeue: give a running task back without consuming an attempt (graceful
-- shutdown of its supervisor).  It goes to the front of its queue.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py);  KEYS[FIXED+1]  stock:task:{id}
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      task id;  ARGV[5]  lease token;  ARGV[6]  reason
-- ARGV[7]      checkpoint: last trade date done ('' for none)
-- ARGV[8]      the attempt's output: its masked last bytes ('' when it printed nothing)
-- ARGV[9]      how many bytes the attempt printed
-- Returns      1

local key, id, token = KEYS[FIXED + 1], ARGV[4], ARGV[5]
local t = load_owned(key, id, token, 'priority', 'attempt')
local prio = t[3]
redis.call('HINCRBY', key, 'attempt', -1)
redis.call('HSET', key, 'status', 'pending', 'updated_at', NOW_ISO, 'progress', '0',
    'error_message', ARGV[6], unpack(output_fields(key, {}, ARGV[8], ARGV[9], t[4], true)))
redis.call('HDEL', key, 'lease_token')
if ARGV[7] and ARGV[7] ~= '' then
    redis.call('HSET', key, 'checkpoint', ARGV[7])
end
redis.call('SREM', K_RUNNING, id)
redis.call('ZREM', K_LEASES, id)
move_status(id, 'running', 'pending')
push_ready(id, prio_of(prio), true)
return 1
