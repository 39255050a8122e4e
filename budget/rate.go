package budget

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
)

// Rate is one API key's budget as every caller of the key sees it: Limit
// calls per Period in all (enrollq's own calls and every lease together), of
// which Reserve per Period are kept from enrollq's own calls for the rest of
// the backend.
//
// The GCRA ("rate" key, github.com/go-redis/redis_rate) is shared by every
// caller, burst 1, period stretched by 1 % so that network jitter cannot
// push two calls into one slot as the API counts them. Up to two slots of
// the reserve become the leases' head start (HeadStart): a lease may take
// the next slots before their time (burst 1+HeadStart for leases only), so
// a live call does not wait for the slot an enrollment just took, nor for
// one another lease just took; the shared GCRA then runs at
// Limit−HeadStart, so that, head start included, no window of Period ever
// holds more than ceil((Limit−HeadStart)/1.01)+HeadStart ≤ Limit calls.
type Rate struct {
	Limit   int
	Period  time.Duration
	Reserve int
}

// Validate reports a rate no GCRA can run: Limit < 1, Period ≤ 0, or a
// Reserve outside 0 ≤ Reserve < Limit.
func (r Rate) Validate() error {
	switch {
	case r.Limit < 1:
		return fmt.Errorf("budget: rate limit must be at least 1, got %d", r.Limit)
	case r.Period <= 0:
		return fmt.Errorf("budget: rate period must be positive, got %s", r.Period)
	case r.Reserve < 0 || r.Reserve >= r.Limit:
		return fmt.Errorf("budget: reserve must be from 0 to %d (below the limit), got %d", r.Limit-1, r.Reserve)
	}
	return nil
}

// HeadStart is how many slots ahead of their time leases may take: the
// reserve, at most 2 and below Limit. Two make a lease wait only when two
// other leases came within the last slot.
func (r Rate) HeadStart() int { return max(min(r.Reserve, 2, r.Limit-1), 0) }

func (r Rate) stretched() time.Duration { return r.Period + r.Period/100 }

// Shared is the GCRA limit every caller of the key passes: burst 1 for
// enrollq's own calls, LeaseBurst for leases.
func (r Rate) Shared(burst int) redis_rate.Limit {
	return redis_rate.Limit{Rate: r.Limit - r.HeadStart(), Burst: burst, Period: r.stretched()}
}

// LeaseBurst is the burst a lease passes the shared GCRA with: 1 plus the
// head start.
func (r Rate) LeaseBurst() int { return 1 + r.HeadStart() }

// Own is the second GCRA enrollq's own calls pass while they do not borrow
// the reserve: Limit−Reserve per Period, stretched like the shared one. It
// is meaningless when Reserve is 0 (OwnLimited reports false).
func (r Rate) Own() redis_rate.Limit {
	return redis_rate.Limit{Rate: r.Limit - r.Reserve, Burst: 1, Period: r.stretched()}
}

// OwnLimited reports whether enrollq's own calls have a GCRA of their own.
func (r Rate) OwnLimited() bool { return r.Reserve > 0 }

// Slot is the time between two calls of the shared GCRA.
func (r Rate) Slot() time.Duration {
	l := r.Shared(1)
	return l.Period / time.Duration(l.Rate)
}

// KeyID names an API key in Redis without revealing it: the first 16 hex
// digits of its SHA-256 (with a prefix, so the digest is enrollq's own).
// Every process that uses the same key computes the same id.
func KeyID(apiKey string) string {
	sum := sha256.Sum256([]byte("enrollq:" + apiKey))
	return hex.EncodeToString(sum[:8])
}

// Keys names the Redis keys of one API key's shared budget. Every key of one
// API key carries the same hash tag, so they live on one Cluster slot.
type Keys struct {
	// Rate is the shared GCRA (redis_rate adds its own "rate:" prefix).
	Rate string
	// Own is enrollq's own GCRA at Limit−Reserve.
	Own string
	// Pause is a sorted set whose member "until" scores the end of the
	// pause after a 429, in Unix milliseconds.
	Pause string
	// LiveWaiting is a sorted set of leases waiting for a slot, scored by
	// when their mark expires; enrollq's own calls yield while it is not
	// empty.
	LiveWaiting string
	// LeaseSeen exists for one Period after the last lease: while it does,
	// enrollq's own calls may borrow the reserve.
	LeaseSeen string
	// Prefix is what the other keys of the API key start with.
	Prefix string
}

// NewKeys returns the keys of keyID (see KeyID) under prefix ("enrollq:").
func NewKeys(prefix, keyID string) Keys {
	p := prefix + "api:{" + keyID + "}:"
	return Keys{
		Rate:        p + "rate",
		Own:         p + "rate:own",
		Pause:       p + "pause",
		LiveWaiting: p + "live_waiting",
		LeaseSeen:   p + "lease_seen",
		Prefix:      p,
	}
}
