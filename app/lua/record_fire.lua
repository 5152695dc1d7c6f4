-- record_fire: write down what happened to one slot of a schedule job (fired, skipped,
-- missed or failed), so that no scheduler process fires it again and the sidecar can
-- show the job's last fire.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- KEYS[FIXED+1]   stock:schedule:{job}          the job's state hash
-- KEYS[FIXED+2]   stock:schedule:{job}:history  latest fires, newest first
-- KEYS[FIXED+3]   stock:schedule:{job}:slot:{ts} the slot's outcome marker
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      slot, epoch seconds
-- ARGV[5]      the fire record as JSON (slot_at, fired_at, trigger, outcome, reason,
--              execution_id, scheduler)
-- ARGV[6]      marker TTL, seconds;  ARGV[7]  history entries kept
-- ARGV[8]      'final' when the slot is settled (fired, skipped): the marker is written;
--              'first' (missed): written only if the slot has no marker yet, else
--              nothing is recorded; '' (a manual run): no marker
-- Returns      1 when the job's last-fire fields were updated (newest slot), 0 when not,
--              -1 when nothing was recorded ('first' and the slot was settled already)

local job, history, marker = KEYS[FIXED + 1], KEYS[FIXED + 2], KEYS[FIXED + 3]
local slot = tonumber(ARGV[4])
local record = cjson.decode(ARGV[5])
if ARGV[8] == 'final' then
    redis.call('SET', marker, ARGV[5], 'EX', tonumber(ARGV[6]))
elseif ARGV[8] == 'first' then
    if not redis.call('SET', marker, ARGV[5], 'NX', 'EX', tonumber(ARGV[6])) then
        return -1
    end
end
redis.call('LPUSH', history, ARGV[5])
redis.call('LTRIM', history, 0, tonumber(ARGV[7]) - 1)
local last = tonumber(redis.call('HGET', job, 'last_slot') or '')
if last ~= nil and last > slot then
    return 0
end
redis.call('HSET', job, 'last_slot', ARGV[4], 'last_slot_at', record['slot_at'] or '',
    'last_fired_at', record['fired_at'] or NOW_ISO, 'last_trigger', record['trigger'] or '',
    'last_outcome', record['outcome'] or '', 'last_reason', record['reason'] or '',
    'last_execution_id', record['execution_id'] or '')
return 1
