// Package receivertest runs the README's webhook receiver examples
// (examples/receivers: Node with npm's standardwebhooks, Python with the
// standard library, Go with the spec's Go library) as processes, for tests
// that check real deliveries against another implementation of the
// Standard Webhooks specification than the one that signs them.
//
// Each example prints every event it verified for the first time as one
// JSON line on stdout and "listening on PORT" on stderr; a Receiver reads
// them.
package receivertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrollq/enrollq/examples/receivers"
	"github.com/enrollq/enrollq/outcomes"
	"github.com/enrollq/enrollq/webhooks"
)

// Receiver is one example receiver running as a process.
type Receiver struct {
	// Lang is "node", "python" or "go".
	Lang string
	// URL is where it listens (any path is accepted).
	URL string

	mu     sync.Mutex
	byID   map[string]outcomes.Event
	order  []string
	stderr bytes.Buffer
}

// Langs are the receivers' languages, for table tests.
var Langs = []string{"node", "python", "go"}

// Start runs the receiver of lang with secret until the test ends.
func Start(t testing.TB, lang, secret string) *Receiver {
	t.Helper()
	dir := t.TempDir()
	var cmd *exec.Cmd
	switch lang {
	case "node":
		if err := nodeModules(dir); err != nil {
			t.Fatalf("node and npm's standardwebhooks@%s are needed for this test: %v", StandardwebhooksNPM, err)
		}
		write(t, filepath.Join(dir, "receiver.mjs"), receivers.Node)
		cmd = exec.Command("node", "receiver.mjs")
	case "python":
		if _, err := exec.LookPath("python3"); err != nil {
			t.Fatalf("python3 is needed for this test (apt-get install python3): %v", err)
		}
		write(t, filepath.Join(dir, "receiver.py"), receivers.Python)
		cmd = exec.Command("python3", "receiver.py")
	case "go":
		bin, err := goReceiver(dir)
		if err != nil {
			t.Fatalf("building the Go receiver: %v", err)
		}
		cmd = exec.Command(bin)
	default:
		t.Fatalf("receivertest: no receiver in %q", lang)
	}
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "WEBHOOK_SECRET="+secret, "PORT=0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the %s receiver: %v", lang, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	r := &Receiver{Lang: lang, byID: map[string]outcomes.Event{}}
	errs := bufio.NewReader(stderr)
	line, err := errs.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening on ") {
		rest, _ := io.ReadAll(errs)
		t.Fatalf("the %s receiver did not start: %q %v\n%s", lang, line, err, rest)
	}
	port, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "listening on ")))
	if err != nil {
		t.Fatalf("the %s receiver: %q", lang, line)
	}
	r.URL = "http://127.0.0.1:" + strconv.Itoa(port) + "/hooks"
	go func() {
		var buf [4096]byte
		for {
			n, err := errs.Read(buf[:])
			r.mu.Lock()
			r.stderr.Write(buf[:n])
			r.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var ev outcomes.Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.ID == "" {
				r.mu.Lock()
				fmt.Fprintf(&r.stderr, "unreadable line on stdout: %q\n", sc.Text())
				r.mu.Unlock()
				continue
			}
			r.mu.Lock()
			if _, dup := r.byID[ev.ID]; dup {
				fmt.Fprintf(&r.stderr, "event %s printed twice: its deduplication failed\n", ev.ID)
			} else {
				r.order = append(r.order, ev.ID)
			}
			r.byID[ev.ID] = ev
			r.mu.Unlock()
		}
	}()
	return r
}

func write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Count is how many distinct events the receiver verified.
func (r *Receiver) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.order)
}

// Events returns the distinct events the receiver verified, in the order
// it first verified them.
func (r *Receiver) Events() []outcomes.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]outcomes.Event, 0, len(r.order))
	for _, id := range r.order {
		out = append(out, r.byID[id])
	}
	return out
}

// Event returns the event with id, if the receiver verified it.
func (r *Receiver) Event(id string) (outcomes.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev, ok := r.byID[id]
	return ev, ok
}

// Stderr is what the receiver wrote on stderr after it started, and any
// line of its stdout that was not an event (printed twice, unreadable).
func (r *Receiver) Stderr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stderr.String()
}

// WaitFor waits up to d until the receiver verified n distinct events.
func (r *Receiver) WaitFor(t testing.TB, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for r.Count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the %s receiver verified %d events in %s, want %d\n%s", r.Lang, r.Count(), d, n, r.Stderr())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Control is one negative control (or its positive counterpart) of
// Controls: what was sent, and the status the receiver must answer.
type Control struct {
	Name string
	// Want2xx: the receiver must accept it; else it must answer 400.
	Want2xx bool
	// Got is the status it answered.
	Got int
}

// Controls posts signed test events to url that the receiver must reject
// — signed with another secret, a body changed after signing, a timestamp
// 10 minutes old and one 10 minutes ahead — and two it must accept: signed
// with secret, and carrying two signatures of which one is secret's (a
// rotation). Each is signed by webhooks.Signer, as the deliverer signs.
func Controls(ctx context.Context, t testing.TB, url, secret, otherSecret string) []Control {
	t.Helper()
	client := webhooks.Client(5 * time.Second)
	n := 0
	post := func(name string, want2xx bool, at time.Time, tamper bool, secrets ...string) Control {
		n++
		id := fmt.Sprintf("test_%x%d", time.Now().UnixNano(), n)
		body, err := json.Marshal(outcomes.Test(id, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		s, err := webhooks.NewSigner(secrets)
		if err != nil {
			t.Fatal(err)
		}
		h, err := s.Headers(id, at, body)
		if err != nil {
			t.Fatal(err)
		}
		if tamper {
			body = bytes.Replace(body, []byte("enrollq webhooks test"), []byte("enrollq webhooks TEST"), 1)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = h
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return Control{Name: name, Want2xx: want2xx, Got: resp.StatusCode}
	}
	now := time.Now()
	return []Control{
		post("wrong secret", false, now, false, otherSecret),
		post("tampered body", false, now, true, secret),
		post("timestamp 10 minutes old", false, now.Add(-10*time.Minute), false, secret),
		post("timestamp 10 minutes ahead", false, now.Add(10*time.Minute), false, secret),
		post("right secret (control)", true, now, false, secret),
		post("two signatures, the second right (rotation)", true, now, false, otherSecret, secret),
	}
}

// Check fails the test for each control the receiver answered wrong.
func Check(t testing.TB, lang string, cs []Control) {
	t.Helper()
	for _, c := range cs {
		ok := c.Got/100 == 2
		if c.Want2xx != ok || (!c.Want2xx && c.Got != http.StatusBadRequest) {
			want := "400"
			if c.Want2xx {
				want = "2xx"
			}
			t.Errorf("%s receiver, %s: answered %d, want %s", lang, c.Name, c.Got, want)
		}
	}
}
