-- recover_claim: the task of a claim whose reply never came back. Redis ran a call that
-- claims (claim, or complete/fail with a claim) and the connection broke before the
-- answer arrived: the task is running under this worker and this lease token, and the
-- worker does not know it. Find it, renew its lease and hand it over as claim_next
-- does, so it runs now instead of waiting for the reaper (which would also spend an
-- attempt). Called only after such a failure: the scan of the running set is off the
-- hot path.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      worker id
-- ARGV[5]      the lease token the unanswered call carried
-- ARGV[6]      lease length, ms
-- Returns      the values of the worker's fields (lib.lua claim_next with 'work'), or
--              false (the call never ran, or claimed nothing, or the task was reaped).

for _, id in ipairs(redis.call('SMEMBERS', K_RUNNING)) do
    local t = redis.call('HMGET', k_task(id), 'lease_token', 'worker', 'status',
        'plugin_name', 'attempt', 'execution_id', 'timeout_seconds', 'checkpoint',
        'records_processed', 'task_type', 'trade_dates', 'start_date', 'end_date',
        'params', 'memory_limit_mb', 'ts_code', 'data_source')
    if t[1] == ARGV[5] and t[2] == ARGV[4] and t[3] == 'running' then
        redis.call('ZADD', K_LEASES, NOW + tonumber(ARGV[6]), id)
        return {id, t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13], t[14],
            t[15], t[16], t[17]}
    end
end
return false
