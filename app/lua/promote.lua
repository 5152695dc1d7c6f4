-- promote: move retrying tasks whose backoff has elapsed from stock:delayed back to the
-- front of their ready queue.  A claim does the same before it pops; this script lets
-- a scheduler (or any maintenance loop) do it when no worker is claiming, so queue
-- depths and statuses stay true.  Idempotent.
--
-- KEYS[1..FIXED]  fixed keys (app/keys.py)
-- ARGV[1..3]   prefix, now_ms, now_iso
-- ARGV[4]      max tasks to promote in this call
-- Returns      number of tasks promoted

return promote_due(tonumber(ARGV[4]))
