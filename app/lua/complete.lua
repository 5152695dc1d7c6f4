-- complete: a running attempt succeeded.  Ends the task `completed`, releases its
-- dependents and counts it in its execution; optionally claims the supervisor's next
-- task in the same step (finish + claim = one round trip).  The attempt's duration
-- (since started_ms) is counted in the stats histogram (lib.lua: observe_duration).
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py);  KEYS[FIXED+1]  stock:task:{id}
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      task id;  ARGV[5]  lease token
-- ARGV[6]      records processed;  ARGV[7]  result summary JSON ('' for none)
-- ARGV[8]      retention, seconds (TTL of the ended task)
-- ARGV[9]      checkpoint: last trade date done ('' for none)
-- ARGV[10]     the attempt's output: its masked last bytes ('' when it printed nothing)
-- ARGV[11]     how many bytes the attempt printed
-- ARGV[12..17] optional claim of the next task: worker id ('' = do not claim), lease
--              token, lease ms, promote limit, 'work', what it can run (as claim.lua)
-- Returns      {tasks ended, next task hash (flat list) or false}

local key, id, token = KEYS[FIXED + 1], ARGV[4], ARGV[5]
local t = load_owned(key, id, token, 'started_ms', 'execution_id', 'dedup_key', 'plugin_name',
    'dependents', 'schema', 'attempt', 'task_type', 'trade_dates', 'priority', 'trigger',
    'worker', 'created_at', 'started_at')
local f = {'progress', '100', 'records_processed', ARGV[6]}
if ARGV[7] ~= '' then
    f[#f + 1] = 'result'
    f[#f + 1] = ARGV[7]
end
if ARGV[9] ~= '' then
    f[#f + 1] = 'checkpoint'
    f[#f + 1] = ARGV[9]
end
output_fields(key, f, ARGV[10], ARGV[11], t[9], (tonumber(t[9]) or 1) > 1)
local started = tonumber(t[3])
if started then
    f[#f + 1] = 'duration_ms'
    f[#f + 1] = fmt_int(NOW - started)
    observe_duration(NOW - started)
end
-- the fields above are written with the status, in finish's one HSET
-- the audit row's values (lib.lua: AUDIT_FIELDS), records as written above
local audit = {t[9], t[4], t[6], t[10], ARGV[6], t[11], t[12], t[13], t[14], t[15], t[16],
    t[3]}
local ended = finish(id, 'completed', nil, nil, tonumber(ARGV[8]),
    {t[1], t[4], t[5], t[6], t[7], t[8], audit}, f)
local nxt = false
if ARGV[12] and ARGV[12] ~= '' then
    nxt = claim_next(ARGV[12], ARGV[13], tonumber(ARGV[14]), tonumber(ARGV[15]),
        ARGV[16] == 'work', ARGV[17])
end
return {ended, nxt}
