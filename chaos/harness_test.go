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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

var (
	chaos = flag.Bool("chaos", false, "run the fault-injection suite")
	long  = flag.Bool("long", false, "run its long variants")
)

const apiKey = "chaos-key-not-a-secret"

var binary string

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
	if out, err := exec.Command("go", "build", "-o", binary, "../cmd/enrollq").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
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
	p := &proc{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, "worker", "--http-addr=")
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

// waitDrained waits until every session's task is completed or archived in
// queue, and returns how many are in each state.
func waitDrained(t *testing.T, rdb redis.UniversalClient, queue string, sessions []string, d time.Duration) (completed, archived int) {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	deadline := time.Now().Add(d)
	for {
		completed, archived = 0, 0
		var other []string
		for _, s := range sessions {
			info, err := insp.GetTaskInfo(queue, tasks.TaskID(queue, s))
			switch {
			case err != nil:
				other = append(other, s+": "+err.Error())
			case info.State == asynq.TaskStateCompleted:
				completed++
			case info.State == asynq.TaskStateArchived:
				archived++
			default:
				other = append(other, s+": "+info.State.String())
			}
		}
		if len(other) == 0 {
			return completed, archived
		}
		if time.Now().After(deadline) {
			t.Fatalf("not drained after %s: %d completed, %d archived, %d other, e.g. %v", d, completed, archived, len(other), other[:min(5, len(other))])
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// checkAgainstAPI compares Redis with what the fake API recorded: every
// session is enrolled at the API exactly once (by one call answered or lost;
// a second call is answered already-tied and reconciled), and its task
// completed as enrolled or reconciled.
func checkAgainstAPI(t *testing.T, rdb redis.UniversalClient, queue string, api *verisoultest.Server, sessions []string) (reconciled int) {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	enrolledCalls := map[string]int{}
	for _, c := range api.Calls() {
		if c.Enrolled {
			enrolledCalls[c.SessionID]++
		}
	}
	for _, s := range sessions {
		if _, ok := api.Enrolled(s); !ok {
			t.Errorf("session %s lost: never enrolled at the API", s)
			continue
		}
		if n := enrolledCalls[s]; n != 1 {
			t.Errorf("session %s enrolled by %d calls", s, n)
		}
		info, err := insp.GetTaskInfo(queue, tasks.TaskID(queue, s))
		if err != nil || info.State != asynq.TaskStateCompleted {
			t.Errorf("session %s enrolled at the API but its task is %v (%v)", s, info, err)
			continue
		}
		if strings.Contains(string(info.Result), `"reconciled"`) {
			reconciled++
		}
	}
	return reconciled
}
