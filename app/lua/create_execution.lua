-- create_execution: create a batch ("execution") of tasks atomically, with optional
-- dependencies between them.  A task with dependencies waits (pending, in no queue)
-- until they complete; the others are claimable at once.  Counters start at zero and
-- are updated by the transitions that end each task.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- KEYS[FIXED+1] stock:execution:{id};  KEYS[FIXED+2]  stock:execution:{id}:tasks
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      execution JSON: execution_id, trigger_type, group_name, date_range, plugins
-- ARGV[5]      tasks JSON: list of task specs (strings), each with `deps`, a list of
--              task ids of this batch it waits for
-- Returns      number of tasks created

local ek, tk = KEYS[FIXED + 1], KEYS[FIXED + 2]
local e = cjson.decode(ARGV[4])
local tasks = cjson.decode(ARGV[5])
if redis.call('EXISTS', ek) == 1 then
    reject('conflict', 'execution ' .. e['execution_id'] .. ' already exists')
end
local eid = e['execution_id']
redis.call('HSET', ek, 'execution_id', eid, 'schema', '1', 'status', 'pending',
    'trigger_type', e['trigger_type'] or 'manual', 'group_name', e['group_name'] or '',
    'date_range', e['date_range'] or '', 'plugins', e['plugins'] or '[]',
    'total_plugins', #tasks, 'completed_plugins', 0, 'failed_plugins', 0,
    'cancelled_plugins', 0, 'created_at', NOW_ISO, 'updated_at', NOW_ISO,
    'started_at', '', 'completed_at', '')
redis.call('ZADD', K_EXECUTIONS, NOW, eid)
for _, spec in ipairs(tasks) do
    create_task(spec, eid)
    redis.call('RPUSH', tk, spec['task_id'])
end
for _, spec in ipairs(tasks) do
    if add_dependencies(spec['task_id'], spec['deps']) == 0 then
        push_ready(spec['task_id'], prio_of(spec['priority']), false)
    end
end
return #tasks
