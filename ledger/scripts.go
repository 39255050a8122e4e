package ledger

import "github.com/redis/go-redis/v9"

// Every transition is one Lua script: it reads the record, checks that the
// transition is allowed from its state (and, for a claim's settle, that the
// token is still the claim), writes the new record, moves it between the
// live, done and dead buckets, keeps the account index and the run counters,
// and appends the outcome event, all in one atomic step on one Cluster slot
// (every key carries the shard's hash tag). Timestamps come from Redis's
// clock (TIME), so workers' clocks do not matter.
//
// A script may run twice for one call: go-redis sends a command again when
// its reply does not come within the read timeout, though Redis may have run
// it. Every script whose second run would answer differently recognises its
// own first run by the call's random nonce, which the record keeps (field
// 20) until the next call moves it on; an enrolled record, kept small, has
// none, and a settle to enrolled is known by its claim's token and request
// id instead. The second run then writes nothing and answers as the first
// did.
//
// Common KEYS: 1 live bucket, 2 done bucket, 3 dead bucket, 4 outcome
// stream, 5 counters, 6 dead-letter time index (7 account index bucket,
// where named).
const prelude = msgpackLua + `
local QUEUED, CALLING, WAITING, RETRYING, ENROLLED, DEAD, REQUEUED, CANCELLED = 1, 2, 3, 4, 5, 6, 7, 8
local NAMES = {'queued', 'calling', 'waiting', 'retrying', 'enrolled', 'dead', 'requeued', 'cancelled'}
local LIVE, DONE, DEADK = KEYS[1], KEYS[2], KEYS[3]
local NF, NENROLLED, MAXV, NONCE = 19, 11, 64, 20

local function clock()
  local t = redis.call('TIME')
  local s = tonumber(t[1])
  return s, s * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local DEF = {0, 0, 0, 0, '', '', '', 0, '', '', false, '', '', 0, 0, 0, 0, 0, 0}
local function fill(r)
  for i = 1, NF do
    if r[i] == nil then
      if i == 11 then r[i] = {} else r[i] = DEF[i] end
    end
  end
  return r
end

local function load(sid)
  for _, k in ipairs({LIVE, DONE, DEADK}) do
    local v = redis.call('HGET', k, sid)
    if v then return fill(mp.unpack(v)), k, v end
  end
  return nil, nil, nil
end

-- step moves r to state st at now, keeping the old state in the history
-- (pairs of state and seconds before the next newer entry, newest first).
local function step(r, st, now)
  local h = {r[1], now - r[3]}
  local old = r[11]
  for i = 1, math.min(#old, 6) do h[#h + 1] = old[i] end
  r[11] = h
  r[1] = st
  r[2] = r[2] + 1
  r[3] = now
end

-- save writes r to bucket to (removing it from bucket from). Enrolled
-- records keep fields 1..11 only, and any record sheds its oldest history
-- while it is over 64 bytes, so that buckets stay listpacks. Field 20 is
-- the nonce of the last call that moved the record (enrolled records, kept
-- to 11 fields, have none).
local function save(r, from, to, sid)
  if from and from ~= to then redis.call('HDEL', from, sid) end
  local out = r
  if r[1] == ENROLLED then
    out = {}
    for i = 1, NENROLLED do out[i] = r[i] end
  end
  local v = mp.pack(out)
  while #v > MAXV and #out[11] > 2 do
    table.remove(out[11])
    table.remove(out[11])
    v = mp.pack(out)
  end
  redis.call('HSET', to, sid, v)
  return v
end

local function qname(q)
  if q == 's' then return 'signup' end
  if q == 'b' then return 'backfill' end
  return string.sub(q, 2)
end

-- runid is the run of r without the line number that follows it ("run|line",
-- the line in base 36); runkey is that run's counters hash in this shard.
local function runid(r) return (string.match(r[7], '^[^|]*')) end
local function runkey(run) return KEYS[5] .. ':' .. run end

-- bump adds n to field f of a run's counters, removing the field at 0 (so
-- a run's hash goes away with its last session, and stays small).
local function bump(rk, f, n)
  if redis.call('HINCRBY', rk, f, n) == 0 then redis.call('HDEL', rk, f) end
end

-- tick counts one final transition of a run in its rate ring: 36 slots of
-- 10 s ("t<slot mod 36>" = "<slot>:<count>"), the last 6 minutes, for the
-- observed rate the ETA is computed from (and "first_ms": the first's, in ms).
local function tick(rk, now)
  local slot = math.floor(now / 10)
  local f = 't' .. (slot % 36)
  local n = 0
  local v = redis.call('HGET', rk, f)
  if v then
    local s, c = string.match(v, '^(%d+):(%d+)$')
    if tonumber(s) == slot then n = tonumber(c) end
  end
  redis.call('HSET', rk, f, slot .. ':' .. (n + 1))
  redis.call('HSETNX', rk, 'first_ms', select(2, clock()))
end

-- runs moves one count from state old (nil: a new record) to r's state,
-- for all sessions ("*") and for r's run (in the run's own hash, with the
-- reconciled count and the rate ring of final transitions).
local function runs(r, old, now)
  if old == r[1] then return end
  if old then redis.call('HINCRBY', KEYS[5], '*|' .. NAMES[old], -1) end
  redis.call('HINCRBY', KEYS[5], '*|' .. NAMES[r[1]], 1)
  local run = runid(r)
  if run == '' then return end
  local rk = runkey(run)
  if old then bump(rk, NAMES[old], -1) end
  bump(rk, NAMES[r[1]], 1)
  if r[1] == ENROLLED and r[10] == 1 then bump(rk, 'reconciled', 1) end
  if (r[1] == ENROLLED or r[1] == DEAD) and now then tick(rk, now) end
end

-- cancelled reports whether r's run was cancelled (runs cancel sets the
-- flag in every shard's hash of the run).
local function cancelled(r)
  local run = runid(r)
  return run ~= '' and redis.call('HEXISTS', runkey(run), 'cancel') == 1
end

-- event appends the outcome of r's new state to the shard's stream.
local function event(r, sidtext, cap, ...)
  return redis.call('XADD', KEYS[4], 'MAXLEN', '~', cap, '*',
    'ev', NAMES[r[1]], 'sid', sidtext, 'acct', r[12], 'q', qname(r[6]),
    'run', runid(r), 'n', tostring(r[8]), ...)
end

-- dead_in and dead_out keep the shard's dead-letter time index and the
-- per-code counts ("code:<code>" in the counters hash).
local function dead_in(r, sid, now)
  redis.call('ZADD', KEYS[6], now, sid)
  redis.call('HINCRBY', KEYS[5], 'code:' .. r[9], 1)
  if runid(r) ~= '' then bump(runkey(runid(r)), 'code:' .. r[9], 1) end
end
local function dead_out(r, sid)
  redis.call('ZREM', KEYS[6], sid)
  redis.call('HINCRBY', KEYS[5], 'code:' .. r[9], -1)
  if runid(r) ~= '' then bump(runkey(runid(r)), 'code:' .. r[9], -1) end
end

-- cancel moves a live record that is not in a call to cancelled: its run
-- was cancelled. It stays in the live bucket (with its account) until the
-- retention ends, and a later Queued of the session for the same account
-- replaces it.
local function cancel(r, where, sid, ret, now)
  local old = r[1]
  step(r, CANCELLED, now)
  r[9], r[10], r[16] = '', '', 0
  r[4] = now + ret
  local v = save(r, where, LIVE, sid)
  runs(r, old, now)
  return v
end

local function requeue(r, where, sid, sidtext, cap, by, ret, now)
  dead_out(r, sid)
  local code = r[9]
  step(r, REQUEUED, now)
  r[9], r[10], r[13], r[14], r[16], r[17], r[18] = code, by, '', 0, 0, 0, 0
  r[4] = now + ret
  local ev = event(r, sidtext, cap, 'code', code, 'by', by)
  local v = save(r, where, LIVE, sid)
  runs(r, DEAD, now)
  return v, ev
end
`

// queuedScript: a producer enqueued the session. ARGV: sid, account hash,
// account, queue, run ("run|line", the line in base 36), retention (s),
// index field, nonce. KEYS[8] is the shard's fence (fence.go): a fenced account
// takes no new session. A cancelled record of the same account is replaced
// (the session never had its call); a session of a cancelled run is
// refused.
var queuedScript = redis.NewScript(prelude + `
local sid = ARGV[1]
if redis.call('HEXISTS', KEYS[8], ARGV[2]) == 1 then return {'fenced'} end
local r, where, v = load(sid)
if r and r[1] == QUEUED and r[NONCE] == tonumber(ARGV[8]) then return {'ok', v} end
if r and not (r[1] == CANCELLED and r[5] == ARGV[2]) then return {'exists', v} end
local now = clock()
local n = fill({QUEUED, 1, now, now + tonumber(ARGV[6]), ARGV[2], ARGV[4], ARGV[5]})
n[NONCE] = tonumber(ARGV[8])
if cancelled(n) then return {'cancelled'} end
if r then
  -- The cancelled record leaves its run's counts and the all-sessions one.
  n[2] = r[2] + 1
  redis.call('HINCRBY', KEYS[5], '*|cancelled', -1)
  if runid(r) ~= '' then bump(runkey(runid(r)), 'cancelled', -1) end
end
n[12] = ARGV[3]
v = save(n, where, LIVE, sid)
redis.call('HSET', KEYS[7], ARGV[7], '')
runs(n, nil, now)
return {'ok', v}
`)

// claimScript: an attempt takes the session for a call. ARGV: sid, account
// hash, account, queue, run, retention (s), index field, lease (ms), nonce.
// KEYS[8] is the shard's fence (fence.go): no claim of a fenced account
// succeeds, in the same atomic step that would take it.
var claimScript = redis.NewScript(prelude + `
local sid = ARGV[1]
if redis.call('HEXISTS', KEYS[8], ARGV[2]) == 1 then return {'fenced'} end
local now, nowms = clock()
local r, where, v = load(sid)
local crashed, old = 0, nil
if not r then
  r = fill({CALLING, 1, now, 0, ARGV[2], ARGV[4], ARGV[5]})
  r[12] = ARGV[3]
  redis.call('HSET', KEYS[7], ARGV[7], '')
else
  if r[1] == CALLING and r[NONCE] == tonumber(ARGV[9]) then return {'ok', v, 0} end
  old = r[1]
  if r[1] == ENROLLED then return {'enrolled', v} end
  if r[1] == DEAD then return {'dead', v} end
  if r[1] == CANCELLED then return {'cancelled', v} end
  if r[1] == CALLING and r[16] > nowms then return {'conflict', v} end
  if cancelled(r) then
    -- A task of a cancelled run that escaped the cancel's sweep.
    return {'cancelled', cancel(r, where, sid, tonumber(ARGV[6]), now)}
  end
  if r[1] == CALLING then
    -- The claim's lease ran out: its attempt crashed or lost its lease
    -- mid-call, so that call's outcome is unknown.
    crashed = 1
    r[15] = 1
    r[8] = r[8] + 1
  end
  r[6] = ARGV[4]
  step(r, CALLING, now)
end
r[16] = nowms + tonumber(ARGV[8])
r[4] = now + tonumber(ARGV[6])
r[NONCE] = tonumber(ARGV[9])
v = save(r, where, LIVE, sid)
runs(r, old, now)
return {'ok', v, crashed}
`)

// renewScript extends a claim's lease. ARGV: sid, token, lease (ms).
var renewScript = redis.NewScript(prelude + `
local r, where, v = load(ARGV[1])
if not r then return {'notfound'} end
if r[1] ~= CALLING or r[2] ~= tonumber(ARGV[2]) then return {'conflict', v} end
local _, nowms = clock()
r[16] = nowms + tonumber(ARGV[3])
v = save(r, where, where, ARGV[1])
return {'ok', v}
`)

// settleScript records what a claimed attempt showed, if the claim is still
// the session's. ARGV: sid, token, outcome, retention (s), session id text,
// stream cap, then by outcome, then the nonce (last):
//
//	enrolled: request id (compact), reconciled, request id (text)
//	dead:     code, last error, request id, asynq retried, called
//	retry:    next at (s), last error, called, unknown, not ready, rate limited
//	wait:     why, until (s), called, unknown, not ready, rate limited
var settleScript = redis.NewScript(prelude + `
local sid = ARGV[1]
local r, where, v = load(sid)
if not r then return {'notfound'} end
local nonce = tonumber(ARGV[#ARGV])
if r[NONCE] == nonce or (r[1] == ENROLLED and ARGV[3] == 'enrolled' and r[2] == tonumber(ARGV[2]) + 1 and r[9] == ARGV[7]) then
  -- This settle's own first run.
  return {'ok', v, ''}
end
if r[1] ~= CALLING or r[2] ~= tonumber(ARGV[2]) then return {'conflict', v} end
local now = clock()
local o, ret, ev = ARGV[3], tonumber(ARGV[4]), ''
r[16] = 0
r[NONCE] = nonce
if o == 'enrolled' then
  r[8] = r[8] + 1
  if r[19] == 0 then r[19] = now end
  step(r, ENROLLED, now)
  r[9], r[10], r[15], r[17], r[18] = ARGV[7], tonumber(ARGV[8]), 0, 0, 0
  r[4] = now + ret
  ev = event(r, ARGV[5], ARGV[6], 'rid', ARGV[9], 'rc', ARGV[8])
  v = save(r, where, DONE, sid)
elseif o == 'dead' then
  if ARGV[11] == '1' then
    r[8] = r[8] + 1
    if r[19] == 0 then r[19] = now end
  end
  step(r, DEAD, now)
  r[9], r[10], r[13], r[14], r[17], r[18] = ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10]), 0, 0
  r[4] = 0
  ev = event(r, ARGV[5], ARGV[6], 'code', ARGV[7], 'err', ARGV[8], 'rid', ARGV[9])
  v = save(r, where, DEADK, sid)
  dead_in(r, sid, now)
else
  if ARGV[9] == '1' then
    r[8] = r[8] + 1
    if r[19] == 0 then r[19] = now end
    if ARGV[10] == '1' then r[15] = 1 elseif ARGV[11] == '1' then r[15] = 0 end
    if ARGV[11] == '1' then
      if r[17] == 0 then r[17] = now end
    else
      r[17] = 0
    end
    if ARGV[12] == '1' then
      if r[18] == 0 then r[18] = now end
    else
      r[18] = 0
    end
  end
  if cancelled(r) then
    -- The run was cancelled while this attempt was in flight: it finished
    -- its call, and its row goes no further.
    step(r, CANCELLED, now)
    r[9], r[10] = '', ''
  elseif o == 'retry' then
    step(r, RETRYING, now)
    r[9], r[10] = tonumber(ARGV[7]), ARGV[8]
  else
    step(r, WAITING, now)
    r[9], r[10] = ARGV[7], tonumber(ARGV[8])
  end
  r[4] = now + ret
  v = save(r, where, LIVE, sid)
end
runs(r, CALLING, now)
return {'ok', v, ev}
`)

// requeueScript: an operator runs a dead session again. ARGV: sid, session
// id text, stream cap, by, retention (s), nonce.
var requeueScript = redis.NewScript(prelude + `
local r, where, v = load(ARGV[1])
if not r then return {'notfound'} end
if r[1] == REQUEUED and r[NONCE] == tonumber(ARGV[6]) then return {'ok', v, ''} end
if r[1] ~= DEAD then return {'state', v} end
local now = clock()
local ev
r[NONCE] = tonumber(ARGV[6])
v, ev = requeue(r, where, ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), now)
return {'ok', v, ev}
`)

// reconcileScript makes the record agree with what asynq says of the
// session's task. ARGV: sid, session id text, stream cap, asynq state
// ("pending", "scheduled", "retry", "active", "aggregating", "completed",
// "archived", or "" when there is no task), retention (s), grace (s),
// asynq's retry count of the task.
var reconcileScript = redis.NewScript(prelude + `
local r, where, v = load(ARGV[1])
if not r then return {'none'} end
local a = ARGV[4]
local now, nowms = clock()
local running = a == 'pending' or a == 'scheduled' or a == 'retry' or a == 'active' or a == 'aggregating'
if r[1] == ENROLLED or r[1] == CANCELLED then return {'none', v} end
if r[1] == DEAD then
  if not running then return {'none', v} end
  -- A higher retry count than at the dead letter: asynq runs the task
  -- again because the worker crashed between recording the dead letter and
  -- asynq archiving it. The worker finishes it as dead; not a requeue.
  if tonumber(ARGV[7]) > r[14] then return {'none', v} end
  local ev
  v, ev = requeue(r, where, ARGV[1], ARGV[2], ARGV[3], 'asynq', tonumber(ARGV[5]), now)
  return {'requeued', v, ev}
end
if running then return {'none', v} end
if a == 'completed' then return {'drift', v} end
if r[1] == CALLING and r[16] > nowms then return {'none', v} end
-- The grace covers a missing task only (its enqueue may be under way);
-- an archived task was enqueued, so it was archived from outside.
if a == '' and now - r[3] < tonumber(ARGV[6]) then return {'none', v} end
local code, msg
if a == 'archived' then
  code = 'archived_outside'
  msg = 'archived_outside: asynq archived the task without the worker recording a dead letter (asynq CLI, asynqmon, or its recoverer after a lost lease); ledger state was ' .. NAMES[r[1]]
else
  code = 'task_deleted'
  msg = 'task_deleted: the task is gone from asynq (deleted with its CLI or asynqmon, or never enqueued); ledger state was ' .. NAMES[r[1]]
end
local old = r[1]
if old == CALLING then r[15] = 1 end
step(r, DEAD, now)
r[9], r[10], r[13], r[14], r[16], r[17], r[18] = code, msg, '', 0, 0, 0, 0
r[4] = 0
local ev = event(r, ARGV[2], ARGV[3], 'code', code, 'err', msg, 'rid', '')
v = save(r, where, DEADK, ARGV[1])
dead_in(r, ARGV[1], now)
runs(r, old, now)
return {'dead', v, ev}
`)

// removeScript removes a record and its index entry, if it is still in
// the state and generation the caller read (Purge: dead; Unqueue: queued).
// KEYS: record bucket, account index bucket, counters, dead-letter time
// index. ARGV: sid, gen, index field, state.
var removeScript = redis.NewScript(msgpackLua + `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {'notfound'} end
local r = mp.unpack(v)
if r[2] ~= tonumber(ARGV[2]) or r[1] ~= tonumber(ARGV[4]) then return {'conflict', v} end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[3])
local names = {'queued', 'calling', 'waiting', 'retrying', 'enrolled', 'dead', 'requeued', 'cancelled'}
redis.call('HINCRBY', KEYS[3], '*|' .. names[r[1]], -1)
local run = string.match(r[7], '^[^|]*')
local rk = KEYS[3] .. ':' .. run
local function bump(f)
  if redis.call('HINCRBY', rk, f, -1) == 0 then redis.call('HDEL', rk, f) end
end
if run ~= '' then bump(names[r[1]]) end
if r[1] == 6 then
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('HINCRBY', KEYS[3], 'code:' .. r[9], -1)
  if run ~= '' then bump('code:' .. r[9]) end
end
return {'ok', v}
`)

// expireScript removes a record whose retention ended, if it is still the
// generation the sweeper read, and takes it out of the all-sessions count
// (a run's counts keep it: they are the run's history). KEYS: record
// bucket, account index bucket, run counters. ARGV: sid, gen, index field.
var expireScript = redis.NewScript(msgpackLua + `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local r = mp.unpack(v)
local now = tonumber(redis.call('TIME')[1])
if r[2] ~= tonumber(ARGV[2]) or r[4] == 0 or r[4] > now then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[3])
local names = {'queued', 'calling', 'waiting', 'retrying', 'enrolled', 'dead', 'requeued', 'cancelled'}
redis.call('HINCRBY', KEYS[3], '*|' .. names[r[1]], -1)
return 1
`)

// movedScript: a producer moved the session's waiting task from one queue
// to another (a signup for a session waiting in backfill). It changes the
// record's queue only, when the record is live but not calling and still in
// queue from; At becomes now (so Reconcile's grace spares the moment between
// the old task's delete and the new one's enqueue); the generation moves on so that a stale Unqueue or Purge of
// the old reading refuses. ARGV: sid, from (compact), to (compact).
var movedScript = redis.NewScript(prelude + `
local r, where, v = load(ARGV[1])
if not r then return {'notfound'} end
if not (r[1] == QUEUED or r[1] == WAITING or r[1] == RETRYING or r[1] == REQUEUED) then return {'state', v} end
if r[6] ~= ARGV[2] then return {'conflict', v} end
r[6] = ARGV[3]
r[2] = r[2] + 1
r[3] = clock()
v = save(r, where, where, ARGV[1])
return {'ok', v}
`)

// cancelScript: the session's run was cancelled and its task removed
// from the queue (or never run): a live record not in a call becomes
// cancelled. ARGV: sid, retention (s).
var cancelScript = redis.NewScript(prelude + `
local r, where, v = load(ARGV[1])
if not r then return {'notfound'} end
if not (r[1] == QUEUED or r[1] == WAITING or r[1] == RETRYING or r[1] == REQUEUED) then return {'state', v} end
local now = clock()
return {'ok', cancel(r, where, ARGV[1], tonumber(ARGV[2]), now)}
`)

var allScripts = []*redis.Script{queuedScript, claimScript, renewScript, settleScript, requeueScript, reconcileScript, removeScript, expireScript, movedScript, cancelScript}
