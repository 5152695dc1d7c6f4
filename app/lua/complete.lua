-- complete: a running attempt succeeded.  Ends the task `completed`, releases its
-- dependents and counts it in its execution.
--
-- KEYS[1..11]  fixed keys;  KEYS[12]  stock:task:{id}
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      task id;  ARGV[5]  lease token
-- ARGV[6]      records processed;  ARGV[7]  result summary JSON ('' for none)
-- ARGV[8]      retention, seconds (TTL of the ended task)
-- Returns      number of tasks ended (1).

local key, id, token = KEYS[FIXED + 1], ARGV[4], ARGV[5]
load_owned(key, id, token)
local f = {'progress', '100', 'records_processed', ARGV[6]}
if ARGV[7] ~= '' then
    f[#f + 1] = 'result'
    f[#f + 1] = ARGV[7]
end
local started = tonumber(redis.call('HGET', key, 'started_ms'))
if started then
    f[#f + 1] = 'duration_ms'
    f[#f + 1] = fmt_int(NOW - started)
end
redis.call('HSET', key, unpack(f))
return finish(id, 'completed', nil, nil, tonumber(ARGV[8]))
