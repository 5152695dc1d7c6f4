-- cleanup: retention.  Ended tasks whose end is older than the cutoff are deleted with
-- their index entries (their hashes also carry a TTL, so a hash may already be gone:
-- then its plugin index entry is removed from every plugin index).  Execution index
-- entries whose execution hash has expired are dropped; with ARGV[6] = '1' (`stockq purge
-- finished`), ended executions whose index time is before the cutoff are deleted too.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      cutoff, epoch ms (ended before this => removed)
-- ARGV[5]      max tasks per status to remove in this call
-- ARGV[6]      optional: '1' to delete ended executions too
-- Returns      {tasks removed, execution index entries removed}

local cutoff, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local removed, exec_removed = 0, 0
local plugins = nil
for _, st in ipairs({'completed', 'failed', 'cancelled'}) do
    local idx = k_status_index(st)
    local ids = redis.call('ZRANGEBYSCORE', idx, '-inf', cutoff, 'LIMIT', 0, limit)
    for _, id in ipairs(ids) do
        local key = k_task(id)
        local t = redis.call('HMGET', key, 'status', 'plugin_name')
        if t[1] == nil or t[1] == false or t[1] == st then
            if t[2] then
                redis.call('ZREM', k_plugin_index(t[2]), id)
            else
                plugins = plugins or redis.call('SMEMBERS', K_PLUGINS)
                for _, p in ipairs(plugins) do
                    redis.call('ZREM', k_plugin_index(p), id)
                end
            end
            redis.call('DEL', key, k_dependents(id))
            redis.call('ZREM', K_ALL, id)
            removed = removed + 1
        end
        redis.call('ZREM', idx, id)
    end
end
local ended_too = ARGV[6] == '1'
local execs = redis.call('ZRANGEBYSCORE', K_EXECUTIONS, '-inf', cutoff, 'LIMIT', 0, limit)
for _, eid in ipairs(execs) do
    local st = redis.call('HGET', k_execution(eid), 'status')
    if not st or (ended_too and TERMINAL[st]) then
        redis.call('DEL', k_execution(eid), k_execution_tasks(eid))
        redis.call('ZREM', K_EXECUTIONS, eid)
        exec_removed = exec_removed + 1
    end
end
return {removed, exec_removed}
