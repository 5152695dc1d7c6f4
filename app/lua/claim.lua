-- claim: promote due delayed tasks, then pop the next ready task in priority order
-- (0, 1, 2) that the worker can run and mark it running under a lease, in one step: a
-- supervisor that dies after this script has its lease expire and the reaper requeues
-- the task.  Ready tasks it cannot run are parked for a worker that can (lib.lua:
-- claim_next, park).
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      worker id
-- ARGV[5]      lease token for this attempt (unique per claim)
-- ARGV[6]      lease length, ms
-- ARGV[7]      max delayed tasks to promote in this call
-- ARGV[8]      optional: 'work' to return only what a worker needs (lib.lua: claim_next)
-- ARGV[9]      optional: what the worker can run, ',plugin,...,@queue,...,' (lib.lua:
--              can_run); '' or absent: anything
-- Returns      the claimed task hash as a flat field/value list (with 'work': the values
--              of the worker's fields), or false (nothing ready that it can run).

return claim_next(ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8] == 'work',
    ARGV[9])
