-- quota: the shared TuShare quota — at most `limit` calls per token and API in any
-- window of `window` ms, across every process and host (a sliding-window log: one
-- sorted-set member per admitted call).  Time is the Redis server's (TIME), so hosts
-- with skewed clocks still share one window.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py);  KEYS[FIXED+1]  stock:quota:{token digest}:{api}
-- ARGV[1..3]   prefix, now_ms, now_iso (unused: the server's clock decides)
-- ARGV[4]      limit (calls per window);  ARGV[5]  window, ms;  ARGV[6]  a unique call id
-- Returns      0 when the call is admitted (and counted), else ms to wait before asking again

local key, limit, window = KEYS[FIXED + 1], tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, now, ARGV[6])
    redis.call('PEXPIRE', key, window)
    return 0
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
