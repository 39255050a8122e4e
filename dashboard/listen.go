package dashboard

import (
	"fmt"
	"net"
	"strings"
)

// CheckListen refuses to serve the dashboard without auth on an address that
// other machines can reach: anything but a loopback address (127.0.0.0/8,
// ::1) or "localhost". An empty host (":8080") and the unspecified addresses
// ("0.0.0.0:8080", "[::]:8080") listen on every interface, so they are not
// loopback. It returns nil when authEnabled, and an error naming the
// variables to set and the address otherwise; an address that is not
// host:port is an error either way.
func CheckListen(addr string, authEnabled bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("dashboard address %q: must be host:port: %v", addr, err)
	}
	if authEnabled || IsLoopback(host) {
		return nil
	}
	return fmt.Errorf("the dashboard on %s would be reachable from other machines without a password: set ENROLLQ_DASHBOARD_USER and ENROLLQ_DASHBOARD_PASSWORD, or listen on 127.0.0.1", addr)
}

// IsLoopback reports whether host (of a host:port) is only reachable from
// this machine: "localhost" or an IP address in 127.0.0.0/8 or ::1.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
