package api

import (
	"fmt"

	"github.com/enrollq/enrollq/dashboard"
)

// CheckListen refuses to serve the API without tokens on an address that
// other machines can reach (anything but loopback), as the dashboard does
// without a password.
func CheckListen(addr string, haveTokens bool) error {
	if err := dashboard.CheckListen(addr, true); err != nil {
		return fmt.Errorf("API address %q: must be host:port", addr)
	}
	if haveTokens || dashboard.CheckListen(addr, false) == nil {
		return nil
	}
	return fmt.Errorf("the API on %s would be reachable from other machines without a token: set ENROLLQ_API_TOKENS (or ENROLLQ_API_TOKENS_FILE), or listen on 127.0.0.1", addr)
}
