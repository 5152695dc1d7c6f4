-- fail: a running attempt failed.  A retryable error with attempts left becomes
-- `retrying`: the task waits in stock:delayed until next_run_at, computed as
-- min(cap, base * 2^(attempt-1)) with equal jitter (half fixed, half random), or
-- retry_after (+ up to 10% jitter) when the caller knows the wait (a rate limit).
-- Otherwise the task ends `failed` (non-retryable errors fail at once).  Whatever the
-- outcome, the attempt's duration (since started_ms) is counted in the stats histogram
-- (lib.lua: observe_duration).
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py);  KEYS[FIXED+1]  stock:task:{id}
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      task id;  ARGV[5]  lease token
-- ARGV[6]      error type (e.g. network, timeout, config_error);  ARGV[7]  message
-- ARGV[8]      1 when retryable, 0 when not
-- ARGV[9]      backoff base, ms;  ARGV[10]  backoff cap, ms
-- ARGV[11]     random number in [0, 1) for the jitter (from the caller)
-- ARGV[12]     retry_after, ms (0: use the backoff)
-- ARGV[13]     retention, seconds;  ARGV[14]  records processed so far
-- ARGV[15]     checkpoint (last trade date done, '' for none): a retry resumes after it
-- ARGV[16]     the attempt's output: its masked last bytes ('' when it printed nothing)
-- ARGV[17]     how many bytes the attempt printed
-- ARGV[18..23] optional claim of the next task: worker id ('' = do not claim), lease
--              token, lease ms, promote limit, 'work', what it can run (as claim.lua)
-- Returns      {status, next_run_at_ms (0 unless retrying), attempt, next task hash or
--              false}; status is 'retrying', 'failed', or 'cancelled' when a cancel had
--              been requested

local key, id, token = KEYS[FIXED + 1], ARGV[4], ARGV[5]
local t = load_owned(key, id, token, 'attempt', 'max_attempts', 'plugin_name', 'started_ms',
    'cancel_requested', 'execution_id', 'dedup_key', 'dependents', 'schema')
local known = {t[1], t[8], t[9], t[5], t[10], t[11]}  -- lib.lua: FINISH_FIELDS

local function claim_after()
    if ARGV[18] and ARGV[18] ~= '' then
        return claim_next(ARGV[18], ARGV[19], tonumber(ARGV[20]), tonumber(ARGV[21]),
            ARGV[22] == 'work', ARGV[23])
    end
    return false
end

local etype, emsg, retryable = ARGV[6], ARGV[7], ARGV[8] == '1'
local attempt, max_attempts = tonumber(t[3]) or 1, tonumber(t[4]) or 1
-- written with the outcome, in one HSET
local f = {'records_processed', ARGV[14]}
if ARGV[15] and ARGV[15] ~= '' then
    f[#f + 1] = 'checkpoint'
    f[#f + 1] = ARGV[15]
end
output_fields(key, f, ARGV[16], ARGV[17], t[3], true)
local started = tonumber(t[6])
if started then
    f[#f + 1] = 'duration_ms'
    f[#f + 1] = fmt_int(NOW - started)
    observe_duration(NOW - started)
end
if etype == 'timeout' then
    bump_stats('timeouts', t[5])
end
if t[7] then  -- cancel_requested
    finish(id, 'cancelled', 'cancelled', 'cancelled while running (' .. etype .. ')',
        tonumber(ARGV[13]), known, f)
    return {'cancelled', 0, attempt, claim_after()}
end
if retryable and attempt < max_attempts then
    local delay
    local retry_after = tonumber(ARGV[12]) or 0
    local rnd = tonumber(ARGV[11]) or 0
    if retry_after > 0 then
        delay = retry_after + math.floor(retry_after * 0.1 * rnd)
    else
        local base, cap = tonumber(ARGV[9]), tonumber(ARGV[10])
        local full = math.min(cap, base * 2 ^ (attempt - 1))
        delay = math.floor(full / 2 + (full / 2) * rnd)
    end
    local at = NOW + delay
    redis.call('HSET', key, 'status', 'retrying', 'next_run_at', fmt_int(at),
        'last_error_type', etype, 'error_message', emsg, 'updated_at', NOW_ISO, unpack(f))
    audit_task(id, 'retrying', etype, emsg)
    redis.call('HDEL', key, 'lease_token', 'cancel_requested')
    redis.call('SREM', K_RUNNING, id)
    redis.call('ZREM', K_LEASES, id)
    redis.call('ZADD', K_DELAYED, at, id)
    move_status(id, 'running', 'retrying')
    bump_stats('retried', t[5])
    return {'retrying', at, attempt, claim_after()}
end
finish(id, 'failed', etype, emsg, tonumber(ARGV[13]), known, f)
return {'failed', 0, attempt, claim_after()}
