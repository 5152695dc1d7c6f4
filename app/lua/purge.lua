-- purge: cancel waiting tasks of one named queue (or of every queue): `stockq purge
-- queue`.  A pending task leaves the set it is parked in (an entry in a ready list is
-- dropped by the next claim, or by the 'lists' mode), a retrying one stock:delayed;
-- each ends `cancelled` with last_error_type=purged, and the tasks waiting on it end
-- `cancelled` (upstream_failed) as for any cancel (lib.lua: finish).
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      the queue name ('' = every queue)
-- ARGV[5]      retention, seconds;  ARGV[6]  the reason (stored as error_message)
-- ARGV[7]      mode: 'tasks' (ARGV[8..] are task ids, from the pending and retrying
--              indexes) or 'lists' (the ready lists themselves: tasks pushed the
--              original way are in no index; each list of at most ARGV[8] entries is
--              rewritten without its stale entries and the purged tasks)
-- Returns      {tasks cancelled (not counting dependents), ids looked at and kept}

local wanted, retention, reason, mode = ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]

local function queue_of(q)
    if q == nil or q == false or q == '' then
        return DEFAULT_QUEUE
    end
    return q
end

local function matches(q)
    return wanted == '' or queue_of(q) == wanted
end

local cancelled, kept = 0, 0
if mode == 'tasks' then
    for i = 8, #ARGV do
        local id = ARGV[i]
        local t = redis.call('HMGET', k_task(id), 'status', 'queue', 'plugin_name')
        if (t[1] == 'pending' or t[1] == 'retrying') and matches(t[2]) then
            if t[1] == 'retrying' then
                redis.call('ZREM', K_DELAYED, id)
            elseif t[3] then
                unpark(id, route_of(t[3], t[2]))
            end
            finish(id, 'cancelled', 'purged', reason, retention)
            cancelled = cancelled + 1
        else
            kept = kept + 1
        end
    end
    return {cancelled, kept}
end

local limit = tonumber(ARGV[8]) or 0
for _, list in ipairs(K_QUEUES) do
    local n = redis.call('LLEN', list)
    if n > 0 and n <= limit then
        local ids = redis.call('LRANGE', list, 0, -1)
        local keep = {}
        for _, id in ipairs(ids) do
            local t = redis.call('HMGET', k_task(id), 'status', 'queue')
            if t[1] == 'pending' then
                if matches(t[2]) then
                    finish(id, 'cancelled', 'purged', reason, retention)
                    cancelled = cancelled + 1
                else
                    keep[#keep + 1] = id
                end
            end
        end
        redis.call('DEL', list)
        for i = 1, #keep, 500 do
            redis.call('RPUSH', list, unpack(keep, i, math.min(i + 499, #keep)))
        end
        kept = kept + #keep
    end
end
return {cancelled, kept}
