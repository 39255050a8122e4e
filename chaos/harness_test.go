package chaos

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

var (
	chaos = flag.Bool("chaos", false, "run the fault-injection suite")
	long  = flag.Bool("long", false, "run its long variants")
)

const apiKey = "chaos-key-not-a-secret"

// binary is enrollq as released; crashBinary the same built with the
// enrollq_crashpoints tag, whose worker honours ENROLLQ_TEST_CRASHPOINT.
var binary, crashBinary string

func TestMain(m *testing.M) {
	flag.Parse()
	if !*chaos {
		fmt.Println("chaos suite not run: pass -chaos (go test ./chaos -chaos)")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "enrollq-chaos")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "enrollq")
	crashBinary = filepath.Join(dir, "enrollq-crashpoints")
	for _, b := range []struct{ out, tags string }{{binary, ""}, {crashBinary, "enrollq_crashpoints"}} {
		if out, err := exec.Command("go", "build", "-tags", b.tags, "-o", b.out, "../cmd/enrollq").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func need(t *testing.T) {
	t.Helper()
	if !*chaos {
		t.Skip("chaos suite: run with go test ./chaos -chaos")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("the chaos suite needs redis-server on PATH")
	}
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

// redisProc is a redis-server child that can be killed and started again
// on the same port and data directory.
type redisProc struct {
	t    *testing.T
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
}

func startRedis(t *testing.T, args ...string) *redisProc {
	t.Helper()
	r := &redisProc{t: t, port: freePort(t), dir: t.TempDir(), args: args}
	r.start()
	t.Cleanup(func() { r.kill() })
	return r
}

func (r *redisProc) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

func (r *redisProc) start() {
	r.t.Helper()
	args := append([]string{"--port", fmt.Sprint(r.port), "--bind", "127.0.0.1", "--dir", r.dir, "--save", "", "--logfile", filepath.Join(r.dir, "redis.log")}, r.args...)
	r.cmd = exec.Command("redis-server", args...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.addr()})
	defer c.Close()
	for range 200 {
		if c.Ping(context.Background()).Err() == nil {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	r.t.Fatalf("redis-server on %s did not start", r.addr())
}

// kill stops the server with SIGKILL, as a crash would.
func (r *redisProc) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// proc is an enrollq child process.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func startWorker(t *testing.T, env []string) *proc {
	t.Helper()
	return startWorkerOf(t, binary, env)
}

func startWorkerOf(t *testing.T, bin string, env []string) *proc {
	t.Helper()
	p := &proc{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "worker", "--http-addr=")
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LOG_FORMAT=json"}, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.signal(syscall.SIGKILL) })
	return p
}

func (p *proc) signal(s syscall.Signal) { _ = p.cmd.Process.Signal(s) }

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("process did not exit within %s\n%.4000s", d, p.out.String())
		return -1
	}
}

// waitDrained waits until every session's ledger record is final —
// enrolled or dead, the one truth of what happened to it (asynq keeps no
// completed task) — and returns how many are in each. queue is where the
// records must say the sessions were.
func waitDrained(t *testing.T, rdb redis.UniversalClient, queue string, sessions []string, d time.Duration) (enrolled, dead int) {
	t.Helper()
	led := chaosLedger(t, rdb)
	deadline := time.Now().Add(d)
	for {
		recs, err := led.StatusMany(context.Background(), sessions)
		enrolled, dead = 0, 0
		var other []string
		seen := map[string]bool{}
		for _, r := range recs {
			seen[r.SessionID] = true
			switch {
			case r.Queue != queue:
				other = append(other, fmt.Sprintf("%s: in queue %s", r.SessionID, r.Queue))
			case r.State == ledger.StateEnrolled:
				enrolled++
			case r.State == ledger.StateDead:
				dead++
			default:
				other = append(other, r.SessionID+": "+string(r.State))
			}
		}
		for _, s := range sessions {
			if !seen[s] {
				other = append(other, s+": no ledger record")
			}
		}
		if err == nil && len(other) == 0 {
			return enrolled, dead
		}
		if time.Now().After(deadline) {
			t.Fatalf("not drained after %s: %d enrolled, %d dead, %d other, e.g. %v (%v)", d, enrolled, dead, len(other), other[:min(5, len(other))], err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func chaosLedger(t *testing.T, rdb redis.UniversalClient) *ledger.Ledger {
	t.Helper()
	led, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return led
}

// checkAgainstAPI compares the ledger with what the fake API recorded:
// every session is enrolled at the API exactly once (by one call answered
// or lost; a second call is answered already-tied and reconciled), its
// ledger record is enrolled (reconciled when a response was lost), and the
// outcome stream holds exactly one final event for it.
func checkAgainstAPI(t *testing.T, rdb redis.UniversalClient, queue string, api *verisoultest.Server, sessions []string) (reconciled int) {
	t.Helper()
	led := chaosLedger(t, rdb)
	enrolledCalls := map[string]int{}
	for _, c := range api.Calls() {
		if c.Enrolled {
			enrolledCalls[c.SessionID]++
		}
	}
	finals := finalEvents(t, led)
	recs, err := led.StatusMany(context.Background(), sessions)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]ledger.Record{}
	for _, r := range recs {
		byID[r.SessionID] = r
	}
	for _, s := range sessions {
		if _, ok := api.Enrolled(s); !ok {
			t.Errorf("session %s lost: never enrolled at the API", s)
			continue
		}
		if n := enrolledCalls[s]; n != 1 {
			t.Errorf("session %s enrolled by %d calls", s, n)
		}
		r, ok := byID[s]
		if !ok || r.State != ledger.StateEnrolled || r.Queue != queue {
			t.Errorf("session %s enrolled at the API but its ledger record is %+v (found %v)", s, r, ok)
			continue
		}
		if n := finals[s]; n != 1 {
			t.Errorf("session %s has %d final events in the outcome stream, want 1", s, n)
		}
		if r.Reconciled {
			reconciled++
		}
	}
	return reconciled
}

// finalEvents counts each session's final events (enrolled, dead) in the
// ledger's outcome stream.
func finalEvents(t *testing.T, led *ledger.Ledger) map[string]int {
	t.Helper()
	evs, err := led.Outcomes(context.Background(), time.Time{}, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, e := range evs {
		if e.Type == "enrolled" || e.Type == "dead" {
			n[e.SessionID]++
		}
	}
	return n
}
