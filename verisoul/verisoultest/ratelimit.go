package verisoultest

import (
	"fmt"
	"net/http"
	"sort"
	"time"
)

// rateLocked applies the key's limit (SetRateLimit, SetKeyRateLimit) to a call of key arriving at
// at: over the limit it returns the 429 step to answer. Every endpoint
// shares it. The caller holds s.mu and took at under it, so a key's window
// (s.recent) is in arrival order: it drops expired calls from its front.
func (s *Server) rateLocked(key string, at time.Time) (Step, bool) {
	limitN := s.limitOf(key)
	if limitN <= 0 {
		return Step{}, false
	}
	recent := s.recent[key]
	for len(recent) > 0 && at.Sub(recent[0]) >= s.limitPer {
		recent = recent[1:]
	}
	over := len(recent) >= limitN
	var step Step
	if over {
		wait := recent[0].Add(s.limitPer).Sub(at)
		step = Step{Status: http.StatusTooManyRequests, RetryAfter: fmt.Sprint(int((wait + time.Second - 1) / time.Second))}
	} else {
		recent = append(recent, at)
	}
	s.recent[key] = recent
	return step, over
}

// SetRateLimit makes the fake enforce the API's rate limit like the real
// one: a call that would make more than n calls of its key in any window of
// length per (by arrival time, every endpoint counted together) is answered
// 429 with a Retry-After in whole seconds. n <= 0 removes the limit.
func (s *Server) SetRateLimit(n int, per time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limitN, s.limitPer, s.recent = n, per, map[string][]time.Time{}
}

// RateLimited counts the calls the fake answered 429 on its own (not by a
// script) because they were over SetRateLimit's limit.
func (s *Server) RateLimited() int {
	n := 0
	for _, c := range s.Calls() {
		if c.OverLimit {
			n++
		}
	}
	return n
}

// MaxInWindow returns the largest number of calls that arrived within any
// window of length d (half-open: a call exactly d after another is in the
// next window), and when that window started.
func MaxInWindow(calls []Call, d time.Duration) (int, time.Time) {
	calls = append([]Call(nil), calls...)
	sort.Slice(calls, func(i, j int) bool { return calls[i].At.Before(calls[j].At) })
	best, at := 0, time.Time{}
	j := 0
	for i := range calls {
		for calls[i].At.Sub(calls[j].At) >= d {
			j++
		}
		if n := i - j + 1; n > best {
			best, at = n, calls[j].At
		}
	}
	return best, at
}
