-- delete_execution: remove an ended execution now (its hash, its task list and its
-- index entry) instead of waiting for retention.  Its tasks stay (they keep their
-- execution_id; a retry of one of them then starts no execution).  An execution that
-- is still pending or running must be cancelled first.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- KEYS[FIXED+1]   stock:execution:{id}
-- KEYS[FIXED+2]   stock:execution:{id}:tasks
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      execution id
-- Returns      1

local ek, tk, id = KEYS[FIXED + 1], KEYS[FIXED + 2], ARGV[4]
local st = redis.call('HGET', ek, 'status')
if not st then
    reject('not_found', 'execution ' .. id .. ' does not exist')
end
if not TERMINAL[st] then
    reject('illegal_transition', 'execution ' .. id .. ' is ' .. st .. '; stop it first')
end
redis.call('DEL', ek, tk)
redis.call('ZREM', K_EXECUTIONS, id)
return 1
