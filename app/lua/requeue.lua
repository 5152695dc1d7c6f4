-- requeue: give a running task back without consuming an attempt (graceful
-- shutdown of its supervisor).  It goes to the front of its queue.
--
-- KEYS[1..11]  fixed keys;  KEYS[12]  stock:task:{id}
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      task id;  ARGV[5]  lease token;  ARGV[6]  reason
-- Returns      1

local key, id, token = KEYS[FIXED + 1], ARGV[4], ARGV[5]
load_owned(key, id, token)
local prio = redis.call('HGET', key, 'priority')
redis.call('HINCRBY', key, 'attempt', -1)
redis.call('HSET', key, 'status', 'pending', 'updated_at', NOW_ISO, 'progress', '0',
    'error_message', ARGV[6])
redis.call('HDEL', key, 'lease_token')
redis.call('SREM', K_RUNNING, id)
redis.call('ZREM', K_LEASES, id)
move_status(id, 'running', 'pending')
push_ready(id, prio_of(prio), true)
return 1
