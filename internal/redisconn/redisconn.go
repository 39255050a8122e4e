// Package redisconn turns REDIS_URL into clients for every Redis topology
// enrollq supports, for go-redis (enrollq's own keys, and asynq through
// NewServerFromRedisClient and friends) and for asynq's RedisConnOpt (the
// dashboard):
//
//	redis://[user:pass@]host:port[/db]            one server
//	rediss://…                                    the same over TLS
//	redis-sentinel://[user:pass@]h1:p1,h2:p2[/]?master=NAME[&db=N][&sentinel_password=P]
//	redis-cluster://[user:pass@]h1:p1,h2:p2       Redis Cluster (rediss-cluster:// for TLS)
package redisconn

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Conn is a parsed REDIS_URL.
type Conn struct {
	// Kind is "single", "sentinel" or "cluster".
	Kind    string
	Options redis.UniversalOptions
}

// Parse reads a REDIS_URL. Errors never contain the password.
func Parse(raw string) (Conn, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Conn{}, fmt.Errorf("REDIS_URL is not a valid URL")
	}
	switch u.Scheme {
	case "redis", "rediss":
		opt, err := redis.ParseURL(raw)
		if err != nil {
			return Conn{}, fmt.Errorf("REDIS_URL: %s", strings.ReplaceAll(err.Error(), raw, "(the URL)"))
		}
		return Conn{Kind: "single", Options: redis.UniversalOptions{
			Addrs: []string{opt.Addr}, DB: opt.DB, Username: opt.Username, Password: opt.Password, TLSConfig: opt.TLSConfig,
		}}, nil
	case "redis-sentinel":
		q := u.Query()
		c := Conn{Kind: "sentinel", Options: redis.UniversalOptions{
			Addrs: hosts(u.Host), MasterName: q.Get("master"), SentinelPassword: q.Get("sentinel_password"),
		}}
		c.Options.Username, c.Options.Password = userinfo(u)
		if db := q.Get("db"); db != "" {
			n, err := strconv.Atoi(db)
			if err != nil || n < 0 {
				return Conn{}, fmt.Errorf("REDIS_URL: db must be a database number, got %q", db)
			}
			c.Options.DB = n
		}
		if c.Options.MasterName == "" || len(c.Options.Addrs) == 0 {
			return Conn{}, fmt.Errorf("REDIS_URL: a redis-sentinel:// URL names the sentinels and ?master=NAME")
		}
		return c, nil
	case "redis-cluster", "rediss-cluster":
		c := Conn{Kind: "cluster", Options: redis.UniversalOptions{Addrs: hosts(u.Host), IsClusterMode: true}}
		c.Options.Username, c.Options.Password = userinfo(u)
		if u.Scheme == "rediss-cluster" {
			c.Options.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if len(c.Options.Addrs) == 0 {
			return Conn{}, fmt.Errorf("REDIS_URL: a redis-cluster:// URL names at least one node")
		}
		return c, nil
	}
	return Conn{}, fmt.Errorf("REDIS_URL: scheme must be redis, rediss, redis-sentinel, redis-cluster or rediss-cluster, got %q", u.Scheme)
}

func hosts(h string) []string {
	var out []string
	for _, a := range strings.Split(h, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func userinfo(u *url.URL) (string, string) {
	if u.User == nil {
		return "", ""
	}
	p, _ := u.User.Password()
	return u.User.Username(), p
}

// Client opens a client; minConns raises the pool size.
func (c Conn) Client(minConns int) redis.UniversalClient {
	o := c.Options
	if minConns > 0 {
		o.PoolSize = max(o.PoolSize, minConns, 10*2)
	}
	return redis.NewUniversalClient(&o)
}

// Asynq returns the same connection as asynq's RedisConnOpt.
func (c Conn) Asynq() asynq.RedisConnOpt {
	o := c.Options
	switch c.Kind {
	case "sentinel":
		return asynq.RedisFailoverClientOpt{MasterName: o.MasterName, SentinelAddrs: o.Addrs, SentinelPassword: o.SentinelPassword,
			Username: o.Username, Password: o.Password, DB: o.DB, TLSConfig: o.TLSConfig}
	case "cluster":
		return asynq.RedisClusterClientOpt{Addrs: o.Addrs, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig}
	}
	return asynq.RedisClientOpt{Addr: o.Addrs[0], Username: o.Username, Password: o.Password, DB: o.DB, TLSConfig: o.TLSConfig}
}
