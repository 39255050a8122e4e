package redisconn_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/redisconn"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
)

// The TLS tests run real redis-server children with --tls-port and
// --tls-auth-clients yes, and certificates the test makes.

func ping(t *testing.T, conn redisconn.Conn) error {
	t.Helper()
	rdb := conn.Client(0)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return rdb.Ping(ctx).Err()
}

func parse(t *testing.T, raw string, files redisconn.TLS) redisconn.Conn {
	t.Helper()
	conn, err := redisconn.Parse(raw, files)
	if err != nil {
		t.Fatalf("Parse(%s): %v", raw, err)
	}
	return conn
}

// checkAsynq enqueues a task through asynq's client on conn's client (as
// enqueue and the worker do), reads it back through asynq's Inspector on it, and checks with a plain connection
// (plain, on the server's non-TLS port) that Redis really holds it.
func checkAsynq(t *testing.T, conn redisconn.Conn, plain redis.UniversalClient) {
	t.Helper()
	queue := "tls-" + strings.ReplaceAll(t.Name(), "/", "-")
	rdb := conn.Client(0)
	defer rdb.Close()
	client := asynq.NewClientFromRedisClient(rdb)
	info, err := client.Enqueue(asynq.NewTask("tls:test", []byte("payload")), asynq.Queue(queue), asynq.TaskID("t1"))
	if err != nil {
		t.Fatalf("asynq enqueue over TLS: %v", err)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	got, err := insp.GetTaskInfo(queue, info.ID)
	if err != nil {
		t.Fatalf("asynq Inspector over TLS: %v", err)
	}
	if got.State != asynq.TaskStatePending || string(got.Payload) != "payload" {
		t.Errorf("task over TLS: state %v, payload %q", got.State, got.Payload)
	}
	ctx := context.Background()
	// asynq keeps a pending task's ID in the queue's pending list.
	ids, err := plain.LRange(ctx, "asynq:{"+queue+"}:pending", 0, -1).Result()
	if err != nil || len(ids) != 1 || ids[0] != "t1" {
		t.Errorf("Redis holds pending %v, %v; want [t1]", ids, err)
	}
}

func TestTLSWithCAAndClientCertificate(t *testing.T) {
	t.Parallel()
	srv := redistest.StartTLSServer(t)
	f := srv.Files
	conn := parse(t, "rediss://"+srv.TLSAddr+"/0", redisconn.TLS{CAFile: f.CAFile, CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile})
	if err := ping(t, conn); err != nil {
		t.Fatalf("PING over TLS with the CA and a client certificate: %v", err)
	}
	if conn.InsecureSkipVerify() {
		t.Errorf("verification is off without skip_verify")
	}
	plain := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer plain.Close()
	checkAsynq(t, conn, plain)
}

// Without a client certificate, a server with tls-auth-clients yes refuses
// the connection.
func TestTLSWithoutClientCertificateIsRefused(t *testing.T) {
	t.Parallel()
	srv := redistest.StartTLSServer(t)
	conn := parse(t, "rediss://"+srv.TLSAddr+"/0?max_retries=-1", redisconn.TLS{CAFile: srv.Files.CAFile})
	if err := ping(t, conn); err == nil {
		t.Fatal("PING without a client certificate succeeded")
	} else {
		t.Logf("refused as expected: %v", err)
	}
}

// With a CA that did not sign the server's certificate (or the system's
// roots), the client refuses the server and says why.
func TestTLSWithTheWrongCAFailsVerification(t *testing.T) {
	t.Parallel()
	srv := redistest.StartTLSServer(t)
	f := srv.Files
	for _, files := range []redisconn.TLS{
		{CAFile: f.OtherCAFile, CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile},
		{CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile}, // the system's roots
	} {
		conn := parse(t, "rediss://"+srv.TLSAddr+"/0?max_retries=-1", files)
		err := ping(t, conn)
		if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Errorf("CA %q: got %v, want a certificate verification error", files.CAFile, err)
		}
	}
}

// skip_verify=true connects whoever signed the server's certificate, and
// says so (cmd/enrollq turns InsecureSkipVerify into a WARN line).
func TestTLSSkipVerify(t *testing.T) {
	t.Parallel()
	srv := redistest.StartTLSServer(t)
	f := srv.Files
	conn := parse(t, "rediss://"+srv.TLSAddr+"/0?skip_verify=true", redisconn.TLS{CAFile: f.OtherCAFile, CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile})
	if !conn.InsecureSkipVerify() {
		t.Error("InsecureSkipVerify is false with skip_verify=true")
	}
	if err := ping(t, conn); err != nil {
		t.Errorf("PING with skip_verify: %v", err)
	}
	for _, raw := range []string{"rediss-cluster://" + srv.TLSAddr + "?skip_verify=1", "rediss-sentinel://" + srv.TLSAddr + "/?master=m&skip_verify=true"} {
		if c := parse(t, raw, redisconn.TLS{}); !c.InsecureSkipVerify() {
			t.Errorf("%s: InsecureSkipVerify is false", raw)
		}
	}
}

// Bad TLS files are errors of Parse, naming the file.
func TestTLSFileErrors(t *testing.T) {
	t.Parallel()
	f := redistest.NewTLSFiles(t)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		raw   string
		files redisconn.TLS
		want  string
	}{
		{"redis://h:6379", redisconn.TLS{CAFile: f.CAFile}, "redis:// does not use TLS"},
		{"redis-cluster://h:7000", redisconn.TLS{CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile}, "redis-cluster:// does not use TLS"},
		{"rediss://h:6379", redisconn.TLS{CAFile: notPEM}, "redis CA file " + notPEM + " holds no PEM certificate"},
		{"rediss://h:6379", redisconn.TLS{CAFile: notPEM + ".missing"}, "no such file"},
		{"rediss://h:6379", redisconn.TLS{CertFile: f.ClientCertFile}, "both the certificate file and its key file"},
		{"rediss://h:6379", redisconn.TLS{CertFile: f.ClientCertFile, KeyFile: f.ServerKeyFile}, "private key does not match public key"},
	} {
		_, err := redisconn.Parse(tt.raw, tt.files)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s %+v: got %v, want an error with %q", tt.raw, tt.files, err, tt.want)
		}
	}
}

// A one-node Redis Cluster that speaks TLS between clients and nodes
// (tls-cluster yes): rediss-cluster:// with the CA and client certificate
// reaches it, for go-redis and asynq.
func TestTLSCluster(t *testing.T) {
	t.Parallel()
	// A node that has met no other does not know its own IP; real nodes
	// do, so announce it.
	srv := redistest.StartTLSServer(t, "--cluster-enabled", "yes", "--tls-cluster", "yes", "--cluster-announce-ip", "127.0.0.1")
	plain := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer plain.Close()
	ctx := context.Background()
	if err := plain.ClusterAddSlotsRange(ctx, 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyNil(t, "the cluster to be ok", func() error {
		info, err := plain.ClusterInfo(ctx).Result()
		if err == nil && !strings.Contains(info, "cluster_state:ok") {
			err = errors.New("cluster_state is not ok")
		}
		return err
	})
	f := srv.Files
	conn := parse(t, "rediss-cluster://"+srv.TLSAddr, redisconn.TLS{CAFile: f.CAFile, CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile})
	if err := ping(t, conn); err != nil {
		t.Fatalf("PING the TLS cluster: %v", err)
	}
	rdb := conn.Client(0)
	defer rdb.Close()
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		t.Fatalf("client is a %T", rdb)
	}
	if err := rdb.Set(ctx, "tls-cluster-key", "v", time.Minute).Err(); err != nil {
		t.Fatalf("SET through the cluster client over TLS: %v", err)
	}
	if v, err := plain.Get(ctx, "tls-cluster-key").Result(); err != nil || v != "v" {
		t.Errorf("the node holds %q, %v", v, err)
	}
	checkAsynq(t, conn, plain)

	// Without the client certificate the node refuses.
	conn = parse(t, "rediss-cluster://"+srv.TLSAddr+"?max_retries=-1", redisconn.TLS{CAFile: f.CAFile})
	if err := ping(t, conn); err == nil {
		t.Error("PING the TLS cluster without a client certificate succeeded")
	}
}

// A Sentinel that speaks TLS, watching a master that speaks TLS
// (tls-replication yes): rediss-sentinel:// with the CA and client
// certificate asks the sentinel for the master and reaches it, both over
// TLS.
func TestTLSSentinel(t *testing.T) {
	t.Parallel()
	master := redistest.StartTLSServer(t)
	f := master.Files
	_, masterPort, _ := strings.Cut(master.TLSAddr, ":")
	sentinelAddr := startTLSSentinel(t, f, masterPort)
	conn := parse(t, "rediss-sentinel://"+sentinelAddr+"/?master=tlsmaster", redisconn.TLS{CAFile: f.CAFile, CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile})
	testutil.EventuallyNil(t, "the sentinel to name the master", func() error { return ping(t, conn) })
	plain := redis.NewClient(&redis.Options{Addr: master.Addr})
	defer plain.Close()
	checkAsynq(t, conn, plain)

	// With the wrong CA the sentinel itself is refused.
	conn = parse(t, "rediss-sentinel://"+sentinelAddr+"/?master=tlsmaster&max_retries=-1", redisconn.TLS{CAFile: f.OtherCAFile, CertFile: f.ClientCertFile, KeyFile: f.ClientKeyFile})
	if err := ping(t, conn); err == nil {
		t.Error("PING through a sentinel whose certificate the CA did not sign succeeded")
	}
}

// startTLSSentinel starts a redis-server in sentinel mode that listens on
// TLS only, monitoring the master at 127.0.0.1:masterPort over TLS, and
// returns its address.
func startTLSSentinel(t *testing.T, f redistest.TLSFiles, masterPort string) string {
	t.Helper()
	port := freePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("port 0\nbind 127.0.0.1\ndir %s\nlogfile %s\ntls-port %d\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-auth-clients yes\ntls-replication yes\nsentinel monitor tlsmaster 127.0.0.1 %s 1\n",
		dir, filepath.Join(dir, "sentinel.log"), port, f.ServerCertFile, f.ServerKeyFile, f.CAFile, masterPort)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
			t.Logf("sentinel log:\n%s", log)
		}
	})
	return fmt.Sprintf("127.0.0.1:%d", port)
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
