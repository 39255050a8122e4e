// Package redisconn turns REDIS_URL (and the TLS files beside it) into
// go-redis clients for every Redis topology enrollq supports; they serve
// enrollq's own keys and asynq alike (asynq.NewServerFromRedisClient,
// NewClientFromRedisClient, NewInspectorFromRedisClient, and the dashboard's
// asynqmon), so every option of the URL and the TLS files reaches asynq too:
//
//	redis://[user:pass@]host:port[/db][?option=value…]     one server
//	rediss://…                                             the same over TLS
//	redis-sentinel://[user:pass@]h1:p1,h2:p2[/db]?master=NAME[&db=N][&sentinel_password=P][&option=value…]
//	rediss-sentinel://…                                    the same over TLS
//	redis-cluster://[user:pass@]h1:p1,h2:p2[?option=value…]  Redis Cluster
//	rediss-cluster://…                                     the same over TLS
//
// Parsing is go-redis's own (ParseURL, ParseFailoverURL, ParseClusterURL),
// so every query option go-redis documents works (dial_timeout, pool_size,
// client_name, read_timeout, max_retries, …) and an unknown one is an error.
// This package adds only what go-redis lacks: the sentinel and cluster
// schemes with a comma-separated host list, the master's credentials in the
// user info of a sentinel URL, skip_verify on every TLS scheme, the CA and
// client certificate files, and errors that never show a password.
package redisconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Kinds of Conn.
const (
	KindSingle   = "single"
	KindSentinel = "sentinel"
	KindCluster  = "cluster"
)

// TLS names the files that configure TLS beyond the URL's scheme. Every
// field is optional; setting any of them needs a TLS scheme (rediss://,
// rediss-sentinel://, rediss-cluster://).
type TLS struct {
	// CAFile is a PEM bundle of the CA certificates that sign the Redis
	// servers' certificates; they replace the system's roots. Empty: the
	// system's roots.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and its private
	// key, for servers that check clients (tls-auth-clients yes); both or
	// neither.
	CertFile string
	KeyFile  string
}

// Conn is a parsed REDIS_URL. Exactly one of Single, Failover and Cluster is
// set, by Kind.
type Conn struct {
	// Kind is KindSingle, KindSentinel or KindCluster.
	Kind     string
	Single   *redis.Options
	Failover *redis.FailoverOptions
	Cluster  *redis.ClusterOptions
}

// Parse reads a REDIS_URL and the TLS files. Errors never contain the
// password.
func Parse(raw string, files TLS) (Conn, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url's error quotes the URL, password included.
		return Conn{}, errors.New("REDIS_URL is not a valid URL (percent-encode special characters in the password)")
	}
	secure := strings.HasPrefix(u.Scheme, "rediss")
	scheme := "redis"
	if secure {
		scheme = "rediss"
	}
	q := u.Query()
	skipVerify, err := popBool(q, "skip_verify")
	if err != nil {
		return Conn{}, err
	}
	if skipVerify && !secure {
		return Conn{}, fmt.Errorf("REDIS_URL: skip_verify needs a TLS scheme (rediss://, rediss-sentinel:// or rediss-cluster://), got %s://", u.Scheme)
	}
	user, pass := userinfo(u)
	var c Conn
	var tlsConfig *tls.Config
	switch u.Scheme {
	case "redis", "rediss":
		u.RawQuery = q.Encode()
		opt, err := redis.ParseURL(u.String())
		if err != nil {
			return Conn{}, redisErr(err, pass)
		}
		c, tlsConfig = Conn{Kind: KindSingle, Single: opt}, opt.TLSConfig
	case "redis-sentinel", "rediss-sentinel":
		first, err := hostList(u, q)
		if err != nil {
			return Conn{}, err
		}
		if m := q.Get("master"); m != "" {
			q.Del("master")
			q.Set("master_name", m)
		}
		for _, k := range []string{"username", "password"} {
			if q.Has(k) {
				return Conn{}, fmt.Errorf("REDIS_URL: give the master's credentials as the URL's user info (%s://user:pass@…), not as ?%s=", u.Scheme, k)
			}
		}
		for _, k := range []string{"route_by_latency", "route_randomly", "replica_only"} {
			// go-redis's failover client panics on the first two, and
			// enrollq writes, so it needs the master.
			if q.Has(k) {
				return Conn{}, fmt.Errorf("REDIS_URL: %s:// does not take %s: enrollq reads and writes on the master", u.Scheme, k)
			}
		}
		sentinelPass, hasSentinelPass := q.Get("sentinel_password"), q.Has("sentinel_password")
		q.Del("sentinel_password")
		gu := url.URL{Scheme: scheme, Host: first, Path: u.Path, RawQuery: q.Encode()}
		opt, err := redis.ParseFailoverURL(gu.String())
		if err != nil {
			return Conn{}, redisErr(err, pass, sentinelPass)
		}
		if opt.MasterName == "" {
			return Conn{}, fmt.Errorf("REDIS_URL: a %s:// URL names the sentinels and ?master=NAME", u.Scheme)
		}
		// go-redis takes the user info for the sentinels' credentials; in
		// enrollq's URL it is the master's, as with every other scheme.
		opt.Username, opt.Password = user, pass
		if hasSentinelPass {
			opt.SentinelPassword = sentinelPass
		}
		c, tlsConfig = Conn{Kind: KindSentinel, Failover: opt}, opt.TLSConfig
	case "redis-cluster", "rediss-cluster":
		first, err := hostList(u, q)
		if err != nil {
			return Conn{}, err
		}
		if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
			return Conn{}, fmt.Errorf("REDIS_URL: Redis Cluster has only database 0, got path %q", u.Path)
		}
		gu := url.URL{Scheme: scheme, User: u.User, Host: first, RawQuery: q.Encode()}
		opt, err := redis.ParseClusterURL(gu.String())
		if err != nil {
			return Conn{}, redisErr(err, pass)
		}
		c, tlsConfig = Conn{Kind: KindCluster, Cluster: opt}, opt.TLSConfig
	default:
		return Conn{}, fmt.Errorf("REDIS_URL: scheme must be redis, rediss, redis-sentinel, rediss-sentinel, redis-cluster or rediss-cluster, got %q", u.Scheme)
	}
	if tlsConfig == nil {
		if files != (TLS{}) {
			return Conn{}, fmt.Errorf("REDIS_URL: a Redis CA file or client certificate is set, but %s:// does not use TLS (use rediss://, rediss-sentinel:// or rediss-cluster://)", u.Scheme)
		}
		return c, nil
	}
	if c.Kind != KindSingle {
		// go-redis names the first host for every connection; left empty,
		// crypto/tls checks each server against the host it dials, which
		// is what a sentinel group or a cluster's nodes need.
		tlsConfig.ServerName = ""
	}
	tlsConfig.MinVersion = tls.VersionTLS12
	tlsConfig.InsecureSkipVerify = skipVerify
	if err := files.apply(tlsConfig); err != nil {
		return Conn{}, err
	}
	return c, nil
}

// apply loads the files into cfg.
func (t TLS) apply(cfg *tls.Config) error {
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return fmt.Errorf("redis CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("redis CA file %s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("redis client certificate: give both the certificate file and its key file, or neither")
	}
	if t.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			// The error names the files, never the key's content.
			return fmt.Errorf("redis client certificate %s with key %s: %w", t.CertFile, t.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return nil
}

// hostList moves every host of a comma-separated list but the first into
// go-redis's addr query options and returns the first.
func hostList(u *url.URL, q url.Values) (string, error) {
	var hosts []string
	for _, h := range strings.Split(u.Host, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return "", fmt.Errorf("REDIS_URL: a %s:// URL names at least one host:port", u.Scheme)
	}
	for _, h := range hosts[1:] {
		q.Add("addr", h)
	}
	return hosts[0], nil
}

// popBool removes a true/false query option and returns its value, read as
// go-redis reads its own (an empty value is false).
func popBool(q url.Values, name string) (bool, error) {
	if !q.Has(name) {
		return false, nil
	}
	v := q.Get(name)
	q.Del(name)
	switch v {
	case "true", "1":
		return true, nil
	case "false", "0", "":
		return false, nil
	}
	return false, fmt.Errorf("REDIS_URL: %s must be true or false, got %q", name, v)
}

func userinfo(u *url.URL) (string, string) {
	if u.User == nil {
		return "", ""
	}
	p, _ := u.User.Password()
	return u.User.Username(), p
}

// redisErr prefixes a go-redis parse error and hides any secret in it.
func redisErr(err error, secrets ...string) error {
	msg := err.Error()
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "xxxxx")
		}
	}
	return errors.New("REDIS_URL: " + strings.TrimPrefix(msg, "redis: "))
}

// InsecureSkipVerify reports whether the URL turned off the verification of
// the servers' certificates (skip_verify=true), for the caller to warn.
func (c Conn) InsecureSkipVerify() bool {
	var cfg *tls.Config
	switch c.Kind {
	case KindSingle:
		cfg = c.Single.TLSConfig
	case KindSentinel:
		cfg = c.Failover.TLSConfig
	case KindCluster:
		cfg = c.Cluster.TLSConfig
	}
	return cfg != nil && cfg.InsecureSkipVerify
}

// Client opens a client; minConns raises the pool size.
func (c Conn) Client(minConns int) redis.UniversalClient {
	pool := func(n int) int {
		if minConns > 0 {
			return max(n, minConns, 10*2)
		}
		return n
	}
	switch c.Kind {
	case KindSentinel:
		o := *c.Failover
		o.PoolSize = pool(o.PoolSize)
		return redis.NewFailoverClient(&o)
	case KindCluster:
		o := *c.Cluster
		o.PoolSize = pool(o.PoolSize)
		return redis.NewClusterClient(&o)
	}
	o := *c.Single
	o.PoolSize = pool(o.PoolSize)
	return redis.NewClient(&o)
}
