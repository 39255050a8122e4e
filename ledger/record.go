package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// State is where a session stands. The numbers are stored in Redis: never
// renumber them.
type State uint8

// The states of a session. Enrolled and Dead are final: only an operator
// (Requeue) or an outside tool seen by Reconcile moves a dead session on,
// and nothing moves an enrolled one.
const (
	StateNone      State = 0 // no record
	StateQueued    State = 1 // a producer enqueued the session's task
	StateCalling   State = 2 // an attempt holds the claim and may be calling the API
	StateWaiting   State = 3 // waiting without using a retry (429, not ready, breaker), until Until
	StateRetrying  State = 4 // a counted retry is due at NextAt after LastError
	StateEnrolled  State = 5 // Verisoul enrolled it (RequestID; Reconciled when the answer was a lost response's)
	StateDead      State = 6 // dead letter: Code, LastError, Attempts, RequestID
	StateRequeued  State = 7 // an operator (or asynq's tools) ran a dead session again
	StateCancelled State = 8 // its backfill run was cancelled before its call (`enrollq runs cancel`)
	stateCount           = 9
	fieldCount           = 19
	enrolledFields       = 11
)

var stateNames = [stateCount]string{"none", "queued", "calling", "waiting", "retrying", "enrolled", "dead", "requeued", "cancelled"}

// String is the state's name as stored in events and run counters.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", s)
}

// Final reports whether the state ends the session's story: enrolled,
// dead, or cancelled with its run (no task of the session is expected in
// asynq; a later Queued of the session for the same account starts it
// again).
func (s State) Final() bool { return s == StateEnrolled || s == StateDead || s == StateCancelled }

// LiveStates are the states in which a task of the session is expected in
// asynq, in their numeric order.
var LiveStates = []State{StateQueued, StateCalling, StateWaiting, StateRetrying, StateRequeued}

// States lists every state a record can be in, in numeric order.
var States = []State{StateQueued, StateCalling, StateWaiting, StateRetrying, StateEnrolled, StateDead, StateRequeued, StateCancelled}

// Live reports whether a task of the session is expected in asynq.
func (s State) Live() bool { return s != StateNone && !s.Final() }

// Step is one earlier state in a record's short history.
type Step struct {
	State State
	At    time.Time
}

// Record is what the ledger knows of one session. Times have a resolution
// of one second (LeaseUntil: one millisecond), all on Redis's clock.
type Record struct {
	// SessionID is the canonical (lower-case) session id.
	SessionID string
	// State is where the session stands; the fields below say more.
	State State
	// Gen counts the record's transitions. While State is calling it is
	// the claim's token; Purge compares it.
	Gen uint64
	// At is when the record entered State.
	At time.Time
	// ExpiresAt is when the sweeper removes the record; zero for dead
	// records, which stay until purged.
	ExpiresAt time.Time
	// AccountID is empty on enrolled records, which keep only AccountHash
	// (to stay small); ByAccount finds them by it.
	AccountID string
	// AccountHash is the 64-bit FNV-1a hash of the account id.
	AccountHash uint64
	// Queue is the queue of the task that last queued or claimed it.
	Queue string
	// Run is the backfill run that enqueued the session, if any.
	Run string
	// Line is the line of the run's input the session came from (0 when
	// unknown): a few bytes in the record, so a run's report can tell the
	// row that enqueued the session from later rows repeating it.
	Line int
	// Attempts counts the attempts that called the API (blip retries
	// within one attempt included in it).
	Attempts int

	LeaseUntil time.Time // calling
	Why        string    // waiting
	Until      time.Time // waiting
	NextAt     time.Time // retrying
	LastError  string    // retrying, dead
	RequestID  string    // enrolled, dead
	Reconciled bool      // enrolled
	Code       string    // dead; requeued: the code it had
	By         string    // requeued: who ran it again ("cli", "asynq", …)
	// AsynqRetried is asynq's retry count when the session was
	// dead-lettered: a run with a higher count is asynq re-running the task
	// after a crash before it archived it, not an operator's requeue.
	AsynqRetried int

	// Unknown: an earlier call may have enrolled the session (no answer,
	// 5xx, timeout, or a claim whose lease ran out mid-call), so an
	// answer session_already_tied_to_an_account is our own enrollment.
	Unknown       bool
	NotReadySince time.Time
	WaitSince     time.Time
	FirstAttempt  time.Time

	// History holds the earlier states, newest first (a few at most).
	History []Step
}

// Project is the Verisoul project of the session: the one its queue names
// ("signup:acme" is acme's lane, "signup" the default project's). The
// record stores no project of its own: the queue says it, in two bytes
// plus the name for a project's lanes, and nothing more for the default.
func (r Record) Project() string { return ProjectOfQueue(r.Queue) }

// LeaseExpired reports whether the record is a claim whose lease has run
// out: the attempt that held it crashed or lost its lease mid-call, and the
// call's outcome is unknown.
func (r Record) LeaseExpired(now time.Time) bool {
	return r.State == StateCalling && !now.Before(r.LeaseUntil)
}

// OutcomeUnknown reports whether an earlier call may have enrolled the
// session: the lost-response rule reconciles an already-tied answer then.
func (r Record) OutcomeUnknown(now time.Time) bool { return r.Unknown || r.LeaseExpired(now) }

// The record's fields in Redis, a MessagePack array (Lua's cmsgpack reads
// and writes it inside the scripts). Positions, 1-based as in the scripts:
//
//	1 st  2 gen  3 at  4 exp  5 account hash  6 queue  7 run  8 attempts
//	9 x   10 y   11 history  | 12 account  13 z  14 asynq retried
//	15 unknown  16 lease (ms)  17 not-ready since  18 waiting since
//	19 first attempt
//
// x, y, z depend on the state (see decode). Enrolled records end after
// field 11, so that with a UUID request id they stay within 64 bytes and
// their bucket stays a listpack.
func decodeRecord[B string | []byte](sessionID string, b B) (Record, error) {
	// The fields are decoded without boxing (a report decodes a million):
	// integers into ns, strings into ss (substrings of b when b is a
	// string: no copy), the history into hist.
	d := decoder[B]{b: b}
	cnt, err := d.arrayLen()
	if err != nil || cnt < 4 {
		return Record{}, fmt.Errorf("ledger: record of %s: not an array", sessionID)
	}
	var ns [fieldCount]int64
	var ss [fieldCount]string
	var hist []any
	for i := range cnt {
		n, s, a, err := d.next()
		if err != nil {
			return Record{}, fmt.Errorf("ledger: record of %s: %w", sessionID, err)
		}
		if i < fieldCount {
			ns[i], ss[i] = n, s
		}
		if i == 10 {
			hist = a
		}
	}
	r := Record{
		SessionID:     sessionID,
		State:         State(ns[0]),
		Gen:           uint64(ns[1]),
		At:            unix(ns[2]),
		ExpiresAt:     unix(ns[3]),
		Queue:         expandQueue(ss[5]),
		Run:           ss[6],
		Attempts:      int(ns[7]),
		AccountID:     ss[11],
		AsynqRetried:  int(ns[13]),
		Unknown:       ns[14] == 1,
		NotReadySince: unix(ns[16]),
		WaitSince:     unix(ns[17]),
		FirstAttempt:  unix(ns[18]),
	}
	if run, line, ok := strings.Cut(r.Run, "|"); ok {
		r.Run = run
		if n, err := strconv.ParseInt(line, 36, 64); err == nil {
			r.Line = int(n)
		}
	}
	if ah := ss[4]; len(ah) == 8 {
		r.AccountHash = binary.BigEndian.Uint64([]byte(ah))
	}
	if ms := ns[15]; ms > 0 {
		r.LeaseUntil = time.UnixMilli(ms).UTC()
	}
	switch r.State {
	case StateWaiting:
		r.Why, r.Until = ss[8], unix(ns[9])
	case StateRetrying:
		r.NextAt, r.LastError = unix(ns[8]), ss[9]
	case StateEnrolled:
		r.RequestID, r.Reconciled = expandRequestID(ss[8]), ns[9] == 1
	case StateDead:
		r.Code, r.LastError, r.RequestID = ss[8], ss[9], ss[12]
	case StateRequeued:
		r.Code, r.By = ss[8], ss[9]
	}
	if h := hist; h != nil {
		t := ns[2]
		for i := 0; i+1 < len(h); i += 2 {
			t -= num(h[i+1])
			r.History = append(r.History, Step{State: State(num(h[i])), At: unix(t)})
		}
	}
	return r, nil
}

func num(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case float64:
		return int64(x)
	case bool:
		if x {
			return 1
		}
	}
	return 0
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func unix(s int64) time.Time {
	if s <= 0 {
		return time.Time{}
	}
	return time.Unix(s, 0).UTC()
}

// decoder reads the subset of MessagePack that Redis's cmsgpack writes for
// a record: arrays, integers, strings, booleans, nil, doubles.
type decoder[B string | []byte] struct {
	b B
	i int
}

var errShort = errors.New("truncated MessagePack")

func (d *decoder[B]) take(n int) (B, error) {
	if n < 0 || d.i+n > len(d.b) {
		var none B
		return none, errShort
	}
	p := d.b[d.i : d.i+n]
	d.i += n
	return p, nil
}

func (d *decoder[B]) uint(n int) (uint64, error) {
	p, err := d.take(n)
	if err != nil {
		return 0, err
	}
	var u uint64
	for i := range len(p) {
		u = u<<8 | uint64(p[i])
	}
	return u, nil
}

func (d *decoder[B]) value() (any, error) {
	p, err := d.take(1)
	if err != nil {
		return nil, err
	}
	c := p[0]
	switch {
	case c <= 0x7f:
		return int64(c), nil
	case c >= 0xe0:
		return int64(int8(c)), nil
	case c >= 0xa0 && c <= 0xbf:
		return d.str(int(c & 0x1f))
	case c >= 0x90 && c <= 0x9f:
		return d.array(int(c & 0x0f))
	}
	switch c {
	case 0xc0:
		return nil, nil
	case 0xc2:
		return false, nil
	case 0xc3:
		return true, nil
	case 0xcc, 0xcd, 0xce, 0xcf:
		u, err := d.uint(1 << (c - 0xcc))
		if u > math.MaxInt64 {
			return nil, errors.New("integer out of range")
		}
		return int64(u), err
	case 0xd0, 0xd1, 0xd2, 0xd3:
		n := 1 << (c - 0xd0)
		u, err := d.uint(n)
		shift := 64 - 8*n
		return int64(u<<shift) >> shift, err
	case 0xca:
		u, err := d.uint(4)
		return float64(math.Float32frombits(uint32(u))), err
	case 0xcb:
		u, err := d.uint(8)
		return math.Float64frombits(u), err
	case 0xd9, 0xc4:
		n, err := d.uint(1)
		if err != nil {
			return nil, err
		}
		return d.str(int(n))
	case 0xda, 0xc5:
		n, err := d.uint(2)
		if err != nil {
			return nil, err
		}
		return d.str(int(n))
	case 0xdb, 0xc6:
		n, err := d.uint(4)
		if err != nil {
			return nil, err
		}
		return d.str(int(n))
	case 0xdc:
		n, err := d.uint(2)
		if err != nil {
			return nil, err
		}
		return d.array(int(n))
	case 0xdd:
		n, err := d.uint(4)
		if err != nil {
			return nil, err
		}
		return d.array(int(n))
	}
	return nil, fmt.Errorf("unexpected MessagePack byte 0x%02x", c)
}

// arrayLen reads an array's header.
func (d *decoder[B]) arrayLen() (int, error) {
	p, err := d.take(1)
	if err != nil {
		return 0, err
	}
	switch c := p[0]; {
	case c >= 0x90 && c <= 0x9f:
		return int(c & 0x0f), nil
	case c == 0xdc || c == 0xdd:
		n, err := d.uint(2 << (c - 0xdc))
		return int(n), err
	}
	return 0, errors.New("not an array")
}

// next reads one value without boxing the common ones: an integer (a
// boolean or double as num converts it) into n, a string into s, an array
// into a.
func (d *decoder[B]) next() (n int64, s string, a []any, err error) {
	if d.i >= len(d.b) {
		return 0, "", nil, errShort
	}
	switch c := d.b[d.i]; {
	case c <= 0x7f:
		d.i++
		return int64(c), "", nil, nil
	case c >= 0xa0 && c <= 0xbf:
		d.i++
		p, err := d.take(int(c & 0x1f))
		return 0, string(p), nil, err
	case c >= 0xcc && c <= 0xcf:
		d.i++
		u, err := d.uint(1 << (c - 0xcc))
		if u > math.MaxInt64 {
			err = errors.New("integer out of range")
		}
		return int64(u), "", nil, err
	}
	v, err := d.value()
	switch x := v.(type) {
	case string:
		s = x
	case []any:
		a = x
	default:
		n = num(v)
	}
	return n, s, a, err
}

func (d *decoder[B]) str(n int) (any, error) {
	p, err := d.take(n)
	return string(p), err
}

func (d *decoder[B]) array(n int) (any, error) {
	if n > len(d.b)-d.i {
		return nil, errShort
	}
	a := make([]any, n)
	for i := range a {
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		a[i] = v
	}
	return a, nil
}
