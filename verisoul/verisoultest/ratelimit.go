package verisoultest

import (
	"fmt"
	"net/http"
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
