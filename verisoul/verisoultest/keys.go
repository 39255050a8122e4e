package verisoultest

import (
	"sort"
	"time"
)

// Several Verisoul projects, several keys: the fake accepts more keys than
// NewServer's (AddAPIKey), enforces the rate limit of each key on its own
// across every endpoint (SetRateLimit for all keys, SetKeyRateLimit for
// one), and counts the calls of each key (CallsByKey, CallsWithKey), so a
// test sees which key every call was made with.

// AddAPIKey makes the fake accept k as well, as another project's key.
func (s *Server) AddAPIKey(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.otherKeys == nil {
		s.otherKeys = map[string]bool{}
	}
	s.otherKeys[k] = true
}

// SetKeyRateLimit gives key a limit of its own: at most n calls of it in
// any window of SetRateLimit's length (a minute when SetRateLimit was not
// called), every endpoint counted together. Other keys keep SetRateLimit's.
func (s *Server) SetKeyRateLimit(key string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keyLimits == nil {
		s.keyLimits = map[string]int{}
	}
	s.keyLimits[key] = n
	if s.limitPer <= 0 {
		s.limitPer = time.Minute
	}
	if s.recent == nil {
		s.recent = map[string][]time.Time{}
	}
}

// keyOKLocked reports whether the fake accepts key: NewServer's (or
// SetAPIKey's), or one of AddAPIKey's. The caller holds s.mu.
func (s *Server) keyOKLocked(key string) bool { return key == s.apiKey || s.otherKeys[key] }

// limitOf is the limit enforced on key's calls (0: none). The caller holds
// s.mu.
func (s *Server) limitOf(key string) int {
	if n, ok := s.keyLimits[key]; ok {
		return n
	}
	return s.limitN
}

// CallsByKey counts the calls received with each key (the x-api-key
// header as sent, "" when there was none), every endpoint together.
func (s *Server) CallsByKey() map[string]int {
	out := map[string]int{}
	for _, c := range s.Calls() {
		out[c.Key]++
	}
	return out
}

// CallsWithKey returns the calls received with key, in arrival order.
func (s *Server) CallsWithKey(key string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Key == key {
			out = append(out, c)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}
