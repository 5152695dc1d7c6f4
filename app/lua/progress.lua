-- progress: record a running task's progress (percent, records, optional message).
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py);  KEYS[FIXED+1]  stock:task:{id}
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      task id;  ARGV[5]  lease token
-- ARGV[6]      progress percent (0-100);  ARGV[7]  records processed
-- ARGV[8]      progress message ('' for none)
-- ARGV[9]      checkpoint: last trade date done ('' for none)
-- Returns      1 when a cancel was requested for the task, else 0.

local key, id, token = KEYS[FIXED + 1], ARGV[4], ARGV[5]
local t = load_owned(key, id, token, 'cancel_requested')
local f = {'progress', ARGV[6], 'records_processed', ARGV[7], 'updated_at', NOW_ISO}
if ARGV[8] ~= '' then
    f[#f + 1] = 'progress_message'
    f[#f + 1] = ARGV[8]
end
if ARGV[9] and ARGV[9] ~= '' then
    f[#f + 1] = 'checkpoint'
    f[#f + 1] = ARGV[9]
end
redis.call('HSET', key, unpack(f))
redis.call('PUBLISH', EVENTS, 'progress ' .. ARGV[6] .. ' ' .. ARGV[7] .. ' ' .. id)
if t[3] then  -- cancel_requested (this script does not write it)
    return 1
end
return 0
