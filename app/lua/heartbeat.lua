-- heartbeat: a supervisor (or a scheduler) says it is alive (or, with ttl 0, that it
-- stopped).
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py);  KEYS[FIXED+1]  stock:worker:{id} (or
--                 stock:scheduler:{id});  KEYS[FIXED+2]  the registry: stock:workers (or
--                 stock:schedulers)
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      worker id;  ARGV[5]  ttl, seconds (0: remove the worker)
-- ARGV[6]      worker fields as a JSON object of strings
-- Returns      number of live workers (heartbeat within the last ttl)

local key, wid, ttl = KEYS[FIXED + 1], ARGV[4], tonumber(ARGV[5])
local K_WORKERS = KEYS[FIXED + 2]
redis.call('ZREMRANGEBYSCORE', K_WORKERS, '-inf', NOW - 86400000)
if ttl <= 0 then
    redis.call('DEL', key)
    redis.call('ZREM', K_WORKERS, wid)
    return redis.call('ZCOUNT', K_WORKERS, NOW - 60000, '+inf')
end
local h = {'worker_id', wid, 'last_seen', NOW_ISO}
for k, v in pairs(cjson.decode(ARGV[6])) do
    h[#h + 1] = k
    h[#h + 1] = tostring(v)
end
redis.call('HSET', key, unpack(h))
redis.call('EXPIRE', key, math.ceil(ttl))
redis.call('ZADD', K_WORKERS, NOW, wid)
return redis.call('ZCOUNT', K_WORKERS, NOW - ttl * 1000, '+inf')
