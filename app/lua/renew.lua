-- renew: extend the leases a supervisor holds, in one call for all its tasks.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      lease length, ms
-- ARGV[5..]    pairs: task id, lease token
-- Returns      {lost ids, ids with a cancel request}: lost = no longer owned (reaped,
--              finished elsewhere, deleted); the supervisor must stop those attempts.

local lease_ms = tonumber(ARGV[4])
local lost, cancels = {}, {}
for i = 5, #ARGV, 2 do
    local id, token = ARGV[i], ARGV[i + 1]
    local t = redis.call('HMGET', k_task(id), 'status', 'lease_token', 'cancel_requested')
    if t[1] == 'running' and t[2] == token then
        redis.call('ZADD', K_LEASES, NOW + lease_ms, id)
        if t[3] then
            cancels[#cancels + 1] = id
        end
    else
        lost[#lost + 1] = id
    end
end
return {lost, cancels}
