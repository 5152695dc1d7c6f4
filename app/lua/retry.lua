-- retry: manual retry of ended tasks.  Each old task (failed or cancelled, not yet
-- retried) gets a new task id with the same work, retry_of=<old id>, and the old one
-- gets retried_by=<new id>.  A new task joins its old task's execution, which reopens
-- (the old task stops counting as failed/cancelled).  Dependencies between tasks
-- retried together are kept (mapped to the new ids); dependencies on tasks outside
-- the call are treated as met.  A task that ended after a checkpoint (the last date a
-- date-by-date task finished) resumes after it: the new task starts with the old one's
-- checkpoint and records (unless ARGV[5] is 'restart': then from the beginning).
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      trigger recorded on the new tasks (e.g. 'retry')
-- ARGV[5]      'resume' (after the old task's checkpoint) or 'restart'
-- ARGV[6..]    pairs: old task id, new task id
-- Returns      list of new task ids (in argument order)

local pairs_list, map = {}, {}
local resume = ARGV[5] ~= 'restart'
for i = 6, #ARGV, 2 do
    local old, new = ARGV[i], ARGV[i + 1]
    local t = redis.call('HMGET', k_task(old), 'status', 'retried_by')
    if not t[1] then
        reject('not_found', 'task ' .. old .. ' does not exist')
    end
    if t[1] ~= 'failed' and t[1] ~= 'cancelled' then
        reject('illegal_transition', 'task ' .. old .. ' is ' .. t[1]
            .. '; only failed or cancelled tasks can be retried')
    end
    if t[2] then
        reject('illegal_transition', 'task ' .. old .. ' was already retried as ' .. t[2])
    end
    if redis.call('EXISTS', k_task(new)) == 1 then
        reject('conflict', 'task id ' .. new .. ' is already taken')
    end
    pairs_list[#pairs_list + 1] = {old, new, t[1]}
    map[old] = new
end

local created = {}
for _, item in ipairs(pairs_list) do
    local old, new, old_status = item[1], item[2], item[3]
    local okey = k_task(old)
    local vals = redis.call('HMGET', okey, unpack(SPEC_FIELDS))
    local spec = {}
    for i, f in ipairs(SPEC_FIELDS) do
        spec[f] = vals[i] or nil  -- HMGET gives false for a missing field: leave it out
    end
    local old_deps = {}
    if spec['depends_on'] then
        old_deps = cjson.decode(spec['depends_on'])
    end
    local deps = {}
    for _, d in ipairs(old_deps) do
        if map[d] then
            deps[#deps + 1] = map[d]
        end
    end
    spec['task_id'] = new
    spec['trigger'] = ARGV[4]
    spec['retry_of'] = old
    spec['depends_on'] = nil
    if #deps > 0 then
        spec['depends_on'] = cjson.encode(deps)
    end
    local exec_id = redis.call('HGET', okey, 'execution_id') or ''
    local ek = k_execution(exec_id)
    if exec_id ~= '' and redis.call('EXISTS', ek) == 1 then
        redis.call('HINCRBY', ek, old_status .. '_plugins', -1)
        redis.call('RPUSH', k_execution_tasks(exec_id), new)
        local est = redis.call('HGET', ek, 'status')
        if TERMINAL[est] then
            redis.call('HSET', ek, 'status', 'running', 'completed_at', '', 'updated_at', NOW_ISO)
            redis.call('PERSIST', ek)
            redis.call('PERSIST', k_execution_tasks(exec_id))
        end
    else
        exec_id = ''
    end
    create_task(spec, exec_id)
    if resume then
        local c = redis.call('HMGET', okey, 'checkpoint', 'records_processed')
        if c[1] and c[1] ~= '' then
            redis.call('HSET', k_task(new), 'checkpoint', c[1], 'records_processed',
                c[2] or '0')
        end
    end
    redis.call('HSET', okey, 'retried_by', new)
    created[#created + 1] = {new, deps, prio_of(spec['priority'])}
end
local ids = {}
for _, c in ipairs(created) do
    if add_dependencies(c[1], c[2]) == 0 then
        push_ready(c[1], c[3], false)
    end
    ids[#ids + 1] = c[1]
end
return ids
