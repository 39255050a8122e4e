package config

import (
	"math"
	"net"
)

// validateAPI checks the settings of `enrollq serve`. The tokens' own
// format (SECRET:SCOPE…) is the api package's to parse; the command
// reports it under ENROLLQ_API_TOKENS.
func (c *Config) validateAPI() error {
	if _, _, err := net.SplitHostPort(c.APIAddr); err != nil {
		return errorFor("APIAddr", "must be host:port, got %q", c.APIAddr)
	}
	if c.APIRateLimit < 0 || math.IsNaN(c.APIRateLimit) || math.IsInf(c.APIRateLimit, 0) {
		return errorFor("APIRateLimit", "must be 0 (no cap) or a number of requests a second, got %g", c.APIRateLimit)
	}
	if c.APIMaxBody < 1024 {
		return errorFor("APIMaxBody", "must be at least 1024 bytes, got %d", c.APIMaxBody)
	}
	return nil
}
