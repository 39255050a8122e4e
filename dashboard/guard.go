package dashboard

import (
	"fmt"
	"net"
	"net/http"
	"strings"
)

// The dashboard's defences against the web pages an operator opens: a
// browser sends basic-auth credentials (and reaches 127.0.0.1) on behalf of
// any page, so auth alone stops neither a cross-site form nor a
// DNS-rebinding page.
//
//   - every unsafe request (POST, DELETE, …) that a browser marks as
//     cross-site is refused (net/http's CrossOriginProtection, which reads
//     Sec-Fetch-Site and Origin), whatever its content type;
//   - without basic auth, a request whose Host is not the listen address, a
//     loopback name on its port, or a configured name is refused: a
//     rebinding page reaches 127.0.0.1 under its own host name;
//   - every answer forbids framing (clickjacking) and content sniffing.

// hostGuard refuses requests whose Host header names another site. listen
// is the address the dashboard listens on (host:port; empty or port 0:
// loopback names on any port); extra are further names, "host" for any
// port or "host:port" for one.
func hostGuard(next http.Handler, listen string, extra []string) http.Handler {
	_, port, _ := net.SplitHostPort(listen)
	anyPort := port == "" || port == "0"
	allowed := map[string]bool{}
	if listen != "" && !anyPort {
		allowed[strings.ToLower(listen)] = true
	}
	for _, h := range extra {
		if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
			allowed[h] = true
		}
	}
	ok := func(hostport string) bool {
		hostport = strings.ToLower(hostport)
		if allowed[hostport] {
			return true
		}
		host, p, err := net.SplitHostPort(hostport)
		if err != nil {
			host, p = strings.Trim(hostport, "[]"), ""
		}
		if allowed[host] {
			return true
		}
		return IsLoopback(host) && (anyPort || p == port)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ok(r.Host) {
			http.Error(w, fmt.Sprintf("403 forbidden: the enrollq dashboard does not answer for host %q; "+
				"open it by its listen address or localhost, or add the name to ENROLLQ_DASHBOARD_HOSTS", r.Host), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// crossOrigin refuses unsafe requests that a browser sent from another
// site; safe methods and requests without browser headers (curl, scripts)
// pass.
func crossOrigin(next http.Handler) http.Handler {
	p := http.NewCrossOriginProtection()
	p.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "403 forbidden: cross-site request to the enrollq dashboard refused", http.StatusForbidden)
	}))
	return p.Handler(next)
}

// securityHeaders forbids other sites to frame the dashboard and browsers
// to guess content types.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}
