package ledger

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Forgetting an account (package forget) needs three things of the ledger,
// in this order: a fence, so that no session of the account is queued or
// claimed from then on; a way to see the account's calls still in flight
// (claims whose lease is live); and an erasure of everything the ledger
// holds of the account. The fence lives in every shard (the account's
// sessions are spread over all of them), as a field of the shard's fence
// hash:
//
//	{<prefix>ledger:<shard>}:fence   hash: account hash (8 bytes) → the forget request's id
//
// so the claim and queued scripts check it in the same atomic step that
// would take or create the session: once Fence has returned, no claim of
// the account can succeed anywhere, and a claim taken before it shows as a
// record in state calling with a live lease (InFlight).

func (l *Ledger) fenceKey(shard int) string { return l.tag(shard) + "fence" }

// Fence stops every new claim and enqueue of the account's sessions (they
// answer ErrFenced), in all shards, in one pipelined round trip. requestID
// is the forget request's id, kept as the fence's value. Fencing an
// account already fenced keeps the first request's id.
func (l *Ledger) Fence(ctx context.Context, accountID, requestID string) error {
	if err := checkAccount(accountID); err != nil {
		return err
	}
	f := hashBytes(accountHash(accountID))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range Shards {
			p.HSetNX(ctx, l.fenceKey(sh), f, requestID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: fencing the account: %w", err)
	}
	return nil
}

// Fenced reports whether the account is fenced in every shard, and the
// forget request that fenced it (the first shard's).
func (l *Ledger) Fenced(ctx context.Context, accountID string) (requestID string, all bool, err error) {
	if err := checkAccount(accountID); err != nil {
		return "", false, err
	}
	f := hashBytes(accountHash(accountID))
	cmds := make([]*redis.StringCmd, Shards)
	_, err = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range Shards {
			cmds[sh] = p.HGet(ctx, l.fenceKey(sh), f)
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return "", false, fmt.Errorf("ledger: reading the fence: %w", err)
	}
	all = true
	for _, c := range cmds {
		v, err := c.Result()
		if err == redis.Nil {
			all = false
			continue
		}
		if requestID == "" {
			requestID = v
		}
	}
	return requestID, all, nil
}

// Unfence lifts the account's fence in every shard (the last step of an
// erasure).
func (l *Ledger) Unfence(ctx context.Context, accountID string) error {
	if err := checkAccount(accountID); err != nil {
		return err
	}
	f := hashBytes(accountHash(accountID))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range Shards {
			p.HDel(ctx, l.fenceKey(sh), f)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: lifting the fence: %w", err)
	}
	return nil
}

// InFlight returns the account's records whose claim is live (state
// calling, lease not run out on Redis's clock): attempts that may be
// calling the API right now. After Fence no new one appears, so a caller
// that waits until InFlight is empty knows no enroll of the account is
// under way or will start.
func (l *Ledger) InFlight(ctx context.Context, accountID string) ([]Record, error) {
	recs, err := l.ByAccount(ctx, accountID)
	if err != nil {
		return nil, err
	}
	now, err := l.rdb.Time(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: reading Redis's clock: %w", err)
	}
	var out []Record
	for _, r := range recs {
		if r.State == StateCalling && !r.LeaseExpired(now) {
			out = append(out, r)
		}
	}
	return out, nil
}

// Erased says what EraseAccount removed.
type Erased struct {
	// Records is the number of session records removed (with their index
	// entries, counters and dead-letter index entries).
	Records int
	// Events is the number of outcome stream entries removed (XDEL).
	Events int
}

// EraseAccount removes everything the ledger holds of the account: its
// records in every state, their account index entries, their place in the
// counters and the dead-letter time index, and every outcome stream entry
// that names the account. It runs one script per shard (each one atomic
// step on its slot), so it is best called with the account fenced (no new
// record can appear meanwhile); calling it again is harmless. The fence
// itself stays (Unfence lifts it).
func (l *Ledger) EraseAccount(ctx context.Context, accountID string) (Erased, error) {
	var out Erased
	if err := checkAccount(accountID); err != nil {
		return out, err
	}
	ah := accountHash(accountID)
	ab := hashBytes(ah)
	for sh := range Shards {
		idx := l.acctKey(sh, l.accountBucket(ah))
		fields, err := l.rdb.HKeys(ctx, idx).Result()
		if err != nil {
			return out, fmt.Errorf("ledger erase: reading the account index: %w", err)
		}
		keys := []string{idx, l.runsKey(sh), l.deadIndexKey(sh), l.streamKey(sh)}
		argv := []any{ab, accountID}
		for _, f := range fields {
			if len(f) != 24 || !strings.HasPrefix(f, ab) {
				continue
			}
			s, err := parseSession(formatUUID(f[8:]))
			if err != nil {
				continue
			}
			keys = append(keys, l.recordKeys(s)...)
			argv = append(argv, s.raw)
		}
		res, err := eraseScript.Run(ctx, l.rdb, keys, argv...).Int64Slice()
		if err != nil {
			return out, fmt.Errorf("ledger erase (shard %d): %w", sh, err)
		}
		out.Records += int(res[0])
		out.Events += int(res[1])
	}
	return out, nil
}

// AccountEventArgs describe an account.* outcome (package forget).
type AccountEventArgs struct {
	// Type is "account.deleted" or "account.delete_failed".
	Type      string
	AccountID string
	// ForgetID is the forget request's id.
	ForgetID string
	// RequestID is Verisoul's request id of the delete, when it answered.
	RequestID string
	// Code and LastError say why a delete failed.
	Code, LastError string
	// Project is the Verisoul project the account is deleted at ("" for
	// the default project: the entry then has no project, as before).
	Project string
}

// AccountEvent appends an account.* event to the outcome stream of the
// account's shard (by its hash), where webhooks and consumers read it like
// a session's. It returns the event's id.
func (l *Ledger) AccountEvent(ctx context.Context, a AccountEventArgs) (string, error) {
	if a.Type != "account.deleted" && a.Type != "account.delete_failed" {
		return "", invalid("type %q: not account.deleted or account.delete_failed", a.Type)
	}
	if err := checkAccount(a.AccountID); err != nil {
		return "", err
	}
	sh := int(accountHash(a.AccountID) % Shards)
	args := &redis.XAddArgs{
		Stream: l.streamKey(sh), MaxLen: int64(l.opts.StreamMaxLen), Approx: true,
		Values: []any{"ev", a.Type, "acct", a.AccountID, "fid", a.ForgetID, "rid", a.RequestID,
			"code", a.Code, "err", truncate(a.LastError, maxLastErrorDead)},
	}
	if a.Project != "" && a.Project != "default" {
		args.Values = append(args.Values.([]any), "proj", a.Project)
	}
	id, err := l.rdb.XAdd(ctx, args).Result()
	if err != nil {
		return "", fmt.Errorf("ledger: appending %s: %w", a.Type, err)
	}
	return strconv.Itoa(sh) + "-" + id, nil
}

// Now returns Redis's clock, the one every record's times are on.
func (l *Ledger) Now(ctx context.Context) (time.Time, error) { return l.rdb.Time(ctx).Result() }

func checkAccount(accountID string) error {
	if accountID == "" {
		return invalid("account_id: must not be empty")
	}
	return checkText("account_id", accountID, maxField)
}

// eraseScript removes the account's records of one shard and the shard's
// stream entries that name it. KEYS: account index bucket, counters,
// dead-letter time index, outcome stream, then the live, done and dead
// buckets of each session. ARGV: account hash (8 bytes), account id, then
// each session (16 raw bytes). A record is removed only when it is the
// account's (its hash, and its account id where it keeps one).
var eraseScript = redis.NewScript(msgpackLua + `
local names = {'queued', 'calling', 'waiting', 'retrying', 'enrolled', 'dead', 'requeued', 'cancelled'}
local ah, acct = ARGV[1], ARGV[2]
-- A run's counters are in its own hash beside the shard's (runs.go).
local function runbump(r, f)
  local run = string.match(r[7], '^[^|]*')
  if run == '' then return end
  local rk = KEYS[2] .. ':' .. run
  if redis.call('HINCRBY', rk, f, -1) == 0 then redis.call('HDEL', rk, f) end
end
local removed, xdel = 0, 0
for i = 3, #ARGV do
  local sid = ARGV[i]
  local base = 4 + (i - 3) * 3
  for j = 1, 3 do
    local k = KEYS[base + j]
    local v = redis.call('HGET', k, sid)
    if v then
      local r = mp.unpack(v)
      local own = r[12]
      if r[5] == ah and (own == nil or own == '' or own == acct) then
        redis.call('HDEL', k, sid)
        redis.call('HINCRBY', KEYS[2], '*|' .. names[r[1]], -1)
        runbump(r, names[r[1]])
        if r[1] == 6 then
          redis.call('ZREM', KEYS[3], sid)
          redis.call('HINCRBY', KEYS[2], 'code:' .. r[9], -1)
          runbump(r, 'code:' .. r[9])
        end
        removed = removed + 1
      end
    end
  end
  redis.call('HDEL', KEYS[1], ah .. sid)
end
local start = '-'
while true do
  local es = redis.call('XRANGE', KEYS[4], start, '+', 'COUNT', 500)
  for _, e in ipairs(es) do
    local f = e[2]
    for x = 1, #f, 2 do
      if f[x] == 'acct' then
        if f[x + 1] == acct then
          redis.call('XDEL', KEYS[4], e[1])
          xdel = xdel + 1
        end
        break
      end
    end
  end
  if #es < 500 then break end
  start = '(' .. es[#es][1]
end
return {removed, xdel}
`)

func init() { allScripts = append(allScripts, eraseScript) }
