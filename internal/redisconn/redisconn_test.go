package redisconn_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/redisconn"
	"github.com/enrollq/enrollq/internal/redistest"
)

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, 5)) }

const secret = "s3cr3t-pw"

// clientOptions returns the options of the client Client builds,
// whatever its kind, so the tests see what go-redis will really use.
type clientOptions struct {
	clientName  string
	poolSize    int
	dialTimeout time.Duration
	readTimeout time.Duration
}

func optionsOf(t *testing.T, c any) clientOptions {
	t.Helper()
	switch c := c.(type) {
	case *redis.Client:
		o := c.Options()
		return clientOptions{o.ClientName, o.PoolSize, o.DialTimeout, o.ReadTimeout}
	case *redis.ClusterClient:
		o := c.Options()
		return clientOptions{o.ClientName, o.PoolSize, o.DialTimeout, o.ReadTimeout}
	}
	t.Fatalf("client is a %T", c)
	return clientOptions{}
}

// Query options of every scheme reach the client that Client makes (which
// asynq uses too); before, the redis:// branch copied only address, database and
// credentials, and the sentinel and cluster branches read no option at all.
func TestQueryOptionsReachTheClient(t *testing.T) {
	t.Parallel()
	const q = "dial_timeout=3s&pool_size=7&client_name=enrollq-test&read_timeout=4"
	for _, raw := range []string{
		"redis://:" + secret + "@127.0.0.1:6379/2?" + q,
		"rediss://:" + secret + "@127.0.0.1:6379/2?" + q,
		"redis-sentinel://127.0.0.1:26379,127.0.0.1:26380/?master=mymaster&" + q,
		"rediss-sentinel://127.0.0.1:26379,127.0.0.1:26380/?master=mymaster&" + q,
		"redis-cluster://127.0.0.1:7000,127.0.0.1:7001?" + q,
		"rediss-cluster://127.0.0.1:7000,127.0.0.1:7001?" + q,
	} {
		conn, err := redisconn.Parse(raw, redisconn.TLS{})
		if err != nil {
			t.Errorf("%s: %v", raw, err)
			continue
		}
		want := clientOptions{"enrollq-test", 7, 3 * time.Second, 4 * time.Second}
		rdb := conn.Client(0)
		if got := optionsOf(t, rdb); got != want {
			t.Errorf("%s: Client options %+v, want %+v", raw, got, want)
		}
		_ = rdb.Close()
		// minConns raises the pool above the URL's, never below it.
		rdb = conn.Client(30)
		if got := optionsOf(t, rdb).poolSize; got != 30 {
			t.Errorf("%s: Client(30) pool size %d, want 30", raw, got)
		}
		_ = rdb.Close()
	}
}

// client_name is what the real server sees (CLIENT GETNAME), and the
// database of the path is the one written to.
func TestQueryOptionsOnARealServer(t *testing.T) {
	t.Parallel()
	conn, err := redisconn.Parse("redis://"+redistest.Addr(t)+"/5?client_name=enrollq-conn-test&dial_timeout=2s", redisconn.TLS{})
	if err != nil {
		t.Fatal(err)
	}
	rdb := conn.Client(0)
	defer rdb.Close()
	ctx := context.Background()
	name, err := rdb.ClientGetName(ctx).Result()
	if err != nil || name != "enrollq-conn-test" {
		t.Errorf("CLIENT GETNAME = %q, %v; want enrollq-conn-test", name, err)
	}
	key := "enrollq:redisconn-test:" + t.Name() // under a prefix redistest lets the tests own
	if err := rdb.Set(ctx, key, "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	db5 := redistest.Client(t, 5)
	defer db5.Del(ctx, key)
	if v, err := db5.Get(ctx, key).Result(); err != nil || v != "x" {
		t.Errorf("database 5 holds %q, %v; want x", v, err)
	}
}

func TestSentinelURL(t *testing.T) {
	t.Parallel()
	conn, err := redisconn.Parse("redis-sentinel://app:"+secret+"@10.0.0.1:26379,10.0.0.2:26380,10.0.0.3:26381/?master=mymaster&db=3&sentinel_password=sp", redisconn.TLS{})
	if err != nil {
		t.Fatal(err)
	}
	o := conn.Failover
	if conn.Kind != redisconn.KindSentinel || o == nil {
		t.Fatalf("kind %q, failover options %v", conn.Kind, o)
	}
	if got := strings.Join(o.SentinelAddrs, ","); got != "10.0.0.1:26379,10.0.0.2:26380,10.0.0.3:26381" {
		t.Errorf("sentinels %s", got)
	}
	// The user info is the master's credentials, as for every other scheme.
	if o.MasterName != "mymaster" || o.DB != 3 || o.Username != "app" || o.Password != secret || o.SentinelPassword != "sp" || o.SentinelUsername != "" {
		t.Errorf("options %+v", o)
	}
	if o.TLSConfig != nil {
		t.Errorf("redis-sentinel:// has TLS")
	}
	// The database may also be the path.
	conn, err = redisconn.Parse("redis-sentinel://10.0.0.1:26379/4?master=m", redisconn.TLS{})
	if err != nil || conn.Failover.DB != 4 {
		t.Errorf("db from the path: %v, %v", conn.Failover, err)
	}
}

func TestClusterURL(t *testing.T) {
	t.Parallel()
	conn, err := redisconn.Parse("rediss-cluster://app:"+secret+"@node-a:7000,node-b:7001,node-c:7002", redisconn.TLS{})
	if err != nil {
		t.Fatal(err)
	}
	o := conn.Cluster
	if conn.Kind != redisconn.KindCluster || o == nil {
		t.Fatalf("kind %q, cluster options %v", conn.Kind, o)
	}
	if got := strings.Join(o.Addrs, ","); got != "node-a:7000,node-b:7001,node-c:7002" {
		t.Errorf("nodes %s", got)
	}
	if o.Username != "app" || o.Password != secret {
		t.Errorf("credentials %q %q", o.Username, o.Password)
	}
	// Each node's certificate is checked against the host dialled, not
	// against the first node's name.
	if o.TLSConfig == nil || o.TLSConfig.ServerName != "" || o.TLSConfig.InsecureSkipVerify {
		t.Errorf("TLS config %+v", o.TLSConfig)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		raw  string
		want string
	}{
		{"redis://:" + secret + "@h:6379/0?no_such_option=1", "unexpected option: no_such_option"},
		{"redis://:" + secret + "@h:6379/0?pool_size=many", "pool_size"},
		{"redis-sentinel://:" + secret + "@h:26379/?master=m&dial_timeout=soon", "dial_timeout"},
		{"redis-cluster://:" + secret + "@h:7000?bogus=1", "unexpected option: bogus"},
		{"redis-sentinel://:" + secret + "@h:26379/", "?master=NAME"},
		{"redis-sentinel://h:26379/?master=m&password=" + secret, "user info"},
		{"redis-sentinel://h:26379/?master=m&route_by_latency=true", "does not take route_by_latency"},
		{"rediss-sentinel://h:26379/?master=m&replica_only=true", "does not take replica_only"},
		{"redis-cluster://:" + secret + "@h:7000/3", "only database 0"},
		{"redis-cluster://:" + secret + "@/", "at least one host"},
		{"redis://:" + secret + "@h:6379/0?skip_verify=true", "skip_verify needs a TLS scheme"},
		{"redis-cluster://:" + secret + "@h:7000?skip_verify=true", "skip_verify needs a TLS scheme"},
		{"rediss://:" + secret + "@h:6379/0?skip_verify=maybe", `skip_verify must be true or false, got "maybe"`},
		{"http://:" + secret + "@h", "scheme must be"},
		{"redis://:" + secret + "@[::1", "not a valid URL"},
	} {
		_, err := redisconn.Parse(tt.raw, redisconn.TLS{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error with %q", tt.raw, err, tt.want)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error shows the password: %v", tt.raw, err)
		}
	}
}
