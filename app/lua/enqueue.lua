-- enqueue: create one pending task and make it claimable, unless identical work is
-- already pending, running or retrying (then that task is returned instead).
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- KEYS[FIXED+1]   stock:dedup:{digest} for this work
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      task id;  ARGV[5]  plugin name;  ARGV[6]  priority (0-2)
-- ARGV[7..]    the task's spec fields as field, value pairs (non-empty values only)
-- Returns      {1, task_id} when created, {0, existing_task_id} when deduplicated.

local dedup_key, id, plugin = KEYS[FIXED + 1], ARGV[4], ARGV[5]
local existing = redis.call('GET', dedup_key)
if existing then
    local st = redis.call('HGET', k_task(existing), 'status')
    if st and ACTIVE[st] then
        return {0, existing}
    end
end
local key = k_task(id)
if redis.call('EXISTS', key) == 1 then
    reject('conflict', 'task id ' .. id .. ' is already taken')
end
redis.call('SET', dedup_key, id)
redis.call('HSET', key, 'schema', TASK_SCHEMA, 'status', 'pending', 'progress', '0',
    'records_processed', '0', 'attempt', '0', 'created_at', NOW_ISO, 'updated_at', NOW_ISO,
    unpack(ARGV, 7))
redis.call('ZADD', K_ALL, NOW, id)
redis.call('ZADD', k_plugin_index(plugin), NOW, id)
redis.call('SADD', K_PLUGINS, plugin)
redis.call('ZADD', k_status_index('pending'), NOW, id)
redis.call('PUBLISH', EVENTS, 'pending ' .. id)
redis.call('HINCRBY', K_STATS, 'enqueued', 1)
redis.call('LPUSH', K_QUEUES[prio_of(ARGV[6]) + 1], id)
if redis.call('LPUSH', K_DOORBELL, '1') > DOORBELL_MAX then
    redis.call('LTRIM', K_DOORBELL, 0, DOORBELL_MAX - 1)
end
return {1, id}
