package ledger

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/config"
)

// Shards is the number of hash-tag shards. It is fixed: a session's shard is
// part of where its record lives, so changing it needs a migration.
const Shards = 16

// Defaults of Options.
const (
	DefaultPrefix       = "enrollq:"
	DefaultBuckets      = 2048
	DefaultStreamMaxLen = 1500
	// DefaultReconcileGrace is how old a live record must be before
	// Reconcile takes a missing asynq task as deleted rather than not yet
	// enqueued.
	DefaultReconcileGrace = time.Minute
)

// Limits on free text, so one record cannot grow without bound.
const (
	maxLastErrorLive = 200
	maxLastErrorDead = 2000
	maxField         = 255
)

// Options configure a Ledger. The zero value of each field means its default.
type Options struct {
	// Prefix starts every key (default "enrollq:"); it must not hold '{' or
	// '}', which would move the hash tag.
	Prefix string
	// Retention is how long enrolled (and idle live) records are kept
	// (default ENROLLQ_RETENTION's, config.Default: 720h). Dead records are kept until purged.
	Retention time.Duration
	// Buckets is the number of record buckets per shard and kind (default
	// 2048). Like Shards it is fixed for the life of the data. A bucket
	// stays a compact listpack while it holds at most 512 records (Redis
	// 7's default hash-max-listpack-entries), so the default keeps every
	// bucket a listpack up to about 16 × 2048 × 400 ≈ 13 million retained
	// sessions: what the default 300 calls/min can enroll in 30 days. Past
	// that buckets turn into hash tables one by one, and a session in one
	// costs about twice as much.
	Buckets int
	// StreamMaxLen caps each shard's outcome stream, approximately (XADD
	// MAXLEN ~ trims whole stream nodes of 100 entries; default 1,000, so
	// about 16,000–17,600 events in all, 2.5 MB: about 53 minutes of
	// outcomes at the default 300 calls/min). The stream is a buffer for
	// consumers that follow it, not the record; the cap keeps an enrolled
	// session's share of it under 30 bytes at 100,000 sessions, so that
	// everything a session costs stays within 200 bytes.
	StreamMaxLen int
	// ReconcileGrace: see DefaultReconcileGrace; negative means none.
	ReconcileGrace time.Duration
}

// Ledger reads and writes session records. It is safe for concurrent use.
type Ledger struct {
	rdb  redis.UniversalClient
	opts Options
	// deadPage overrides DeadList's page size per shard (tests).
	deadPage int64
}

// New returns a Ledger on rdb, which it does not close.
func New(rdb redis.UniversalClient, opts Options) (*Ledger, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, invalid("Prefix %q: must not contain '{' or '}'", opts.Prefix)
	}
	if opts.Retention == 0 {
		opts.Retention = config.Default().Retention
	}
	if opts.Retention < time.Second {
		return nil, invalid("Retention %s: must be at least 1s", opts.Retention)
	}
	if opts.Buckets == 0 {
		opts.Buckets = DefaultBuckets
	}
	if opts.Buckets < 1 || opts.Buckets > 1<<20 {
		return nil, invalid("Buckets %d: must be within 1…1048576", opts.Buckets)
	}
	if opts.StreamMaxLen == 0 {
		opts.StreamMaxLen = DefaultStreamMaxLen
	}
	if opts.StreamMaxLen < 1 {
		return nil, invalid("StreamMaxLen %d: must be positive", opts.StreamMaxLen)
	}
	if opts.ReconcileGrace == 0 {
		opts.ReconcileGrace = DefaultReconcileGrace
	}
	opts.ReconcileGrace = max(opts.ReconcileGrace, 0)
	return &Ledger{rdb: rdb, opts: opts}, nil
}

// Using returns a Ledger like l (same options, same keys) that talks to
// Redis through rdb: a wrapper of l's client (enqueue gathers the scripts
// of many sessions into one pipeline this way).
func (l *Ledger) Using(rdb redis.UniversalClient) *Ledger {
	c := *l
	c.rdb = rdb
	return &c
}

// Load puts every script in Redis's script cache, so that later calls (and
// pipelines, which cannot fall back from EVALSHA to EVAL) find them. Calls
// load a missing script by themselves; Load only saves that first trip.
func (l *Ledger) Load(ctx context.Context) error {
	for _, s := range allScripts {
		if err := s.Load(ctx, l.rdb).Err(); err != nil {
			return err
		}
	}
	return nil
}

// sid is a session id in its two forms: the canonical text and the 16 bytes
// the buckets are keyed by.
type sid struct {
	text string
	raw  string
	hash uint64
}

func parseSession(s string) (sid, error) {
	raw, ok := parseUUID(s)
	if !ok {
		return sid{}, invalid("session_id %q: must be a canonical UUID", s)
	}
	h := fnv.New64a()
	h.Write([]byte(raw))
	return sid{text: strings.ToLower(s), raw: raw, hash: h.Sum64()}, nil
}

func (s sid) shard() int { return int(s.hash % Shards) }

func (l *Ledger) bucket(s sid) int { return int((s.hash / Shards) % uint64(l.opts.Buckets)) }

// accountHash is the 64-bit FNV-1a hash that stands for an account in the
// account index and in enrolled records.
func accountHash(account string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(account))
	return h.Sum64()
}

func hashBytes(h uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], h)
	return string(b[:])
}

func (l *Ledger) accountBucket(ah uint64) int { return int((ah >> 8) % uint64(l.opts.Buckets)) }

// tag is the hash tag of a shard: every key of the shard has it, so each
// script's keys are on one Redis Cluster slot.
func (l *Ledger) tag(shard int) string {
	return "{" + l.opts.Prefix + "ledger:" + strconv.Itoa(shard) + "}:"
}

func (l *Ledger) liveKey(shard, b int) string { return l.tag(shard) + "live:" + strconv.Itoa(b) }
func (l *Ledger) doneKey(shard, b int) string { return l.tag(shard) + "done:" + strconv.Itoa(b) }
func (l *Ledger) deadKey(shard, b int) string { return l.tag(shard) + "dead:" + strconv.Itoa(b) }
func (l *Ledger) acctKey(shard, b int) string { return l.tag(shard) + "acct:" + strconv.Itoa(b) }
func (l *Ledger) streamKey(shard int) string  { return l.tag(shard) + "out" }
func (l *Ledger) runsKey(shard int) string    { return l.tag(shard) + "runs" }
func (l *Ledger) deadIndexKey(shard int) string {
	return l.tag(shard) + "dead-by-time"
}

// recordKeys are KEYS[1..3] of every script that finds a record: the live,
// done and dead buckets of the session.
func (l *Ledger) recordKeys(s sid) []string {
	sh, b := s.shard(), l.bucket(s)
	return []string{l.liveKey(sh, b), l.doneKey(sh, b), l.deadKey(sh, b)}
}

// transitionKeys add the shard's outcome stream, counters and dead-letter
// time index.
func (l *Ledger) transitionKeys(s sid) []string {
	sh := s.shard()
	return append(l.recordKeys(s), l.streamKey(sh), l.runsKey(sh), l.deadIndexKey(sh))
}

// indexKey and indexField place a session in its account's index entry (in
// the session's shard, so that it is written in the same step as the record).
func (l *Ledger) indexKey(s sid, ah uint64) string {
	return l.acctKey(s.shard(), l.accountBucket(ah))
}

func indexField(s sid, ah uint64) string { return hashBytes(ah) + s.raw }

// parseUUID returns the 16 bytes of a canonical UUID (either case).
func parseUUID(s string) (string, bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return "", false
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	b, err := hex.DecodeString(h)
	if err != nil {
		return "", false
	}
	return string(b), true
}

func formatUUID(raw string) string {
	h := hex.EncodeToString([]byte(raw))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// compactRequestID stores a UUID request id as its 16 bytes; other text is
// kept as is, behind a zero byte when it happens to be 16 bytes long.
func compactRequestID(id string) string {
	if raw, ok := parseUUID(id); ok {
		return raw
	}
	if len(id) == 16 {
		return "\x00" + id
	}
	return id
}

func expandRequestID(v string) string {
	switch {
	case len(v) == 16:
		return formatUUID(v)
	case len(v) == 17 && v[0] == 0:
		return v[1:]
	}
	return v
}

// compactQueue stores the two known queues in one byte, and a project's
// lanes ("signup:acme", see tasks.QueueFor) in two plus the project's name.
// Other names are kept whole after "=", so the forms never meet.
func compactQueue(q string) string {
	lane, project, ok := strings.Cut(q, ":")
	switch {
	case lane == "signup" && !ok:
		return "s"
	case lane == "backfill" && !ok:
		return "b"
	case lane == "signup" && !strings.Contains(project, ":"):
		return "s:" + project
	case lane == "backfill" && !strings.Contains(project, ":"):
		return "b:" + project
	}
	return "=" + q
}

func expandQueue(v string) string {
	switch {
	case v == "s":
		return "signup"
	case v == "b":
		return "backfill"
	case strings.HasPrefix(v, "s:"):
		return "signup" + v[1:]
	case strings.HasPrefix(v, "b:"):
		return "backfill" + v[1:]
	}
	return strings.TrimPrefix(v, "=")
}

// ProjectOfQueue is the project whose lane queue is (tasks.QueueFor's
// "<lane>:<project>"), "default" for a queue without a colon.
func ProjectOfQueue(queue string) string {
	if i := strings.LastIndexByte(queue, ':'); i >= 0 {
		return queue[i+1:]
	}
	return "default"
}

func checkText(field, v string, max int) error {
	if len(v) > max {
		return invalid("%s: at most %d bytes, got %d", field, max, len(v))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}

func secs(d time.Duration) string { return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10) }
func millis(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10)
}

// nonce tells one call of a script from another, so that a script go-redis
// sends again after a read timeout recognises its own first run (see
// scripts.go). 32 random bits, kept in the record while it stays in the
// state the call made: a few bytes.
func nonce() string { return strconv.FormatUint(uint64(rand.Uint32()), 10) }

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func unixArg(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.Unix(), 10)
}
