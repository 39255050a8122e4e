// Package dashboard serves asynqmon, asynq's web UI, under /dashboard for
// enrollq's queues: behind HTTP basic auth when a user and password are set,
// read-only on request, refusing cross-site writes, foreign Host names and
// framing (see guard.go). What an operator runs from the UI changes asynq
// only; the ledger follows by reconciling (ledger/reconcile), so the
// dashboard needs no knowledge of asynqmon's routes.
package dashboard

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"

	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"
)

// RootPath is the URL path the dashboard is served under; every page and API
// route of asynqmon is below it.
const RootPath = "/dashboard"

// Realm is the basic-auth realm the dashboard asks credentials for.
const Realm = "enrollq"

// Options configure the dashboard handler. Zero fields take the default in
// their comment.
type Options struct {
	// Redis is the connection to the Redis that holds asynq's queues.
	// Required. asynqmon reads and writes the queues through it, so the
	// dashboard opens no connection pool of its own and needs no Close; the
	// handler never closes it.
	Redis redis.UniversalClient
	// User and Password turn on HTTP basic auth (realm "enrollq") when both
	// are set; every request must then carry them. Setting only one of them
	// is an error. Default: no auth (keep the listener on loopback; see
	// CheckListen).
	User, Password string
	// ListenAddr is the host:port the dashboard is served on. Without basic
	// auth, only requests whose Host is this address, a loopback name
	// (localhost, 127.0.0.1, [::1]) on its port, or one of Hosts are
	// answered, which defeats DNS rebinding. Default empty: loopback names
	// on any port.
	ListenAddr string
	// Hosts are further Host names answered without basic auth ("name" for
	// any port, "name:port" for one): the names of a tunnel or reverse
	// proxy in front of the dashboard. Default none.
	Hosts []string
	// ReadOnly shows the queues without letting anyone run, archive, delete
	// or cancel tasks or pause queues. Default false.
	ReadOnly bool
}

// sharedConn is an asynq.RedisConnOpt that hands out an existing client
// instead of opening a new one.
type sharedConn struct{ c redis.UniversalClient }

func (s sharedConn) MakeRedisClient() any { return s.c }

// New returns the dashboard handler, to be mounted at RootPath+"/" (it also
// answers RootPath). It returns an error when Redis is missing or only one
// of User and Password is set.
func New(opts Options) (http.Handler, error) {
	switch {
	case opts.Redis == nil:
		return nil, errors.New("dashboard: Options.Redis is required")
	case (opts.User == "") != (opts.Password == ""):
		return nil, errors.New("dashboard: basic auth needs both a user and a password, or neither")
	}
	var h http.Handler = asynqmon.New(asynqmon.Options{
		RootPath:     RootPath,
		RedisConnOpt: sharedConn{opts.Redis},
		ReadOnly:     opts.ReadOnly,
	})
	// Nothing follows asynqmon's requests: what it changes in asynq (run,
	// archive, delete) is reconciled into the ledger by the worker's
	// sweeper and by every reader that meets the record (ledger/reconcile).
	// Cross-site writes are refused before anything else sees them, with
	// or without auth (a browser sends a page's requests with the
	// operator's credentials).
	h = crossOrigin(h)
	if opts.User != "" {
		h = basicAuth(h, opts.User, opts.Password)
	} else {
		h = hostGuard(h, opts.ListenAddr, opts.Hosts)
	}
	return securityHeaders(h), nil
}

// basicAuth lets through only requests that carry user and password. Both
// are compared as SHA-256 digests in constant time, so neither the content
// nor the length of the secrets leaks through response timing.
func basicAuth(next http.Handler, user, password string) http.Handler {
	wantUser := sha256.Sum256([]byte(user))
	wantPass := sha256.Sum256([]byte(password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		gotUser := sha256.Sum256([]byte(u))
		gotPass := sha256.Sum256([]byte(p))
		userOK := subtle.ConstantTimeCompare(gotUser[:], wantUser[:])
		passOK := subtle.ConstantTimeCompare(gotPass[:], wantPass[:])
		if !ok || userOK&passOK != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="`+Realm+`", charset="UTF-8"`)
			http.Error(w, "401 unauthorized: the enrollq dashboard needs its user and password", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
