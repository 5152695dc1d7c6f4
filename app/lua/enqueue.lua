-- enqueue: create one pending task and make it claimable, unless identical work is
-- already pending, running or retrying (then that task is returned instead).
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- KEYS[FIXED+1] stock:dedup:{digest} for this work
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      task spec as JSON: task_id plus SPEC_FIELDS (all strings)
-- Returns      {1, task_id} when created, {0, existing_task_id} when deduplicated.

local dedup_key = KEYS[FIXED + 1]
local spec = cjson.decode(ARGV[4])
local existing = redis.call('GET', dedup_key)
if existing then
    local st = redis.call('HGET', k_task(existing), 'status')
    if st and ACTIVE[st] then
        return {0, existing}
    end
    redis.call('DEL', dedup_key)
end
if redis.call('EXISTS', k_task(spec['task_id'])) == 1 then
    reject('conflict', 'task id ' .. spec['task_id'] .. ' is already taken')
end
create_task(spec, '')
push_ready(spec['task_id'], prio_of(spec['priority']), false)
return {1, spec['task_id']}
