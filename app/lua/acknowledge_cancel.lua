-- acknowledge_cancel: the supervisor killed a running attempt whose cancel was
-- requested; the task ends `cancelled`.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py);  KEYS[FIXED+1]  stock:task:{id}
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      task id;  ARGV[5]  lease token;  ARGV[6]  retention, seconds
-- ARGV[7]      the attempt's output: its masked last bytes ('' when it printed nothing)
-- ARGV[8]      how many bytes the attempt printed
-- Returns      number of tasks ended

local key, id, token = KEYS[FIXED + 1], ARGV[4], ARGV[5]
local t = load_owned(key, id, token, 'cancel_requested', 'attempt')
if not t[3] then
    reject('illegal_transition', 'task ' .. id .. ' has no cancel request')
end
return finish(id, 'cancelled', 'cancelled', 'cancelled while running', tonumber(ARGV[6]),
    nil, output_fields(key, {}, ARGV[7], ARGV[8], t[4], true))
