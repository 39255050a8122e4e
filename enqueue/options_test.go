package enqueue_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestOptionsMisuseDoesNotCompile builds two small programs against this
// package (through go build -overlay, so nothing is written into the tree):
// one with every option where it belongs, which must compile, and one with
// each option where it does not, where the compiler must refuse every line.
// Before the option types were split, WithCreatedAt given to New stamped
// every enrollment and WithMaxQueued given to Enroll was silently ignored.
func TestOptionsMisuseDoesNotCompile(t *testing.T) {
	t.Parallel()
	const header = `package main

import (
	"context"
	"time"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
)

var (
	ctx  = context.Background()
	c    *enqueue.Client
	rows func(func(enqueue.Row) bool)
	led  *ledger.Ledger
	_    = time.Now
)

func main() {
`
	good := []string{
		`enqueue.New(nil, enqueue.WithQueue("q"), enqueue.WithMaxRetry(3), enqueue.WithKeepCompleted(time.Hour), enqueue.WithRetention(time.Hour), enqueue.WithLedger(led))`,
		`c.Enroll(ctx, "s", "a", enqueue.WithQueue("q"), enqueue.WithMaxRetry(3), enqueue.WithKeepCompleted(time.Hour), enqueue.WithRun("r"), enqueue.WithCreatedAt(time.Now()))`,
		`c.EnrollMany(ctx, rows, enqueue.WithQueue("q"), enqueue.WithMaxRetry(3), enqueue.WithKeepCompleted(time.Hour), enqueue.WithRun("r"), enqueue.WithConcurrency(8), enqueue.WithMaxQueued(10, nil))`,
	}
	bad := []string{
		`enqueue.New(nil, enqueue.WithCreatedAt(time.Now()))`,
		`enqueue.New(nil, enqueue.WithRun("r"))`,
		`enqueue.New(nil, enqueue.WithConcurrency(8))`,
		`enqueue.New(nil, enqueue.WithMaxQueued(10, nil))`,
		`c.Enroll(ctx, "s", "a", enqueue.WithMaxQueued(10, nil))`,
		`c.Enroll(ctx, "s", "a", enqueue.WithConcurrency(8))`,
		`c.Enroll(ctx, "s", "a", enqueue.WithRetention(time.Hour))`,
		`c.Enroll(ctx, "s", "a", enqueue.WithLedger(led))`,
		`c.EnrollMany(ctx, rows, enqueue.WithCreatedAt(time.Now()))`,
		`c.EnrollMany(ctx, rows, enqueue.WithRetention(time.Hour))`,
		`c.EnrollMany(ctx, rows, enqueue.WithLedger(led))`,
	}
	build := func(name string, lines []string) (string, int) {
		t.Helper()
		dir := t.TempDir()
		src := header
		for _, l := range lines {
			src += "\t" + l + "\n"
		}
		src += "}\n"
		file := filepath.Join(dir, name+".go")
		if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		// The program's path inside the module (testdata is not a package
		// of ./...): overlaid, never written.
		target, err := filepath.Abs(filepath.Join("testdata", "optionsmisuse", name, "main.go"))
		if err != nil {
			t.Fatal(err)
		}
		overlay := filepath.Join(dir, "overlay.json")
		if err := os.WriteFile(overlay, fmt.Appendf(nil, `{"Replace":{%q:%q}}`, target, file), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("go", "build", "-overlay", overlay, "-gcflags=-e", "-o", os.DevNull, target)
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	headerLines := strings.Count(header, "\n")

	if out, code := build("good", good); code != 0 {
		t.Fatalf("every option where it belongs must compile; go build exit %d:\n%s", code, out)
	}
	out, code := build("bad", bad)
	if code == 0 {
		t.Fatalf("the misuses compiled")
	}
	for i, l := range bad {
		if !strings.Contains(out, fmt.Sprintf("bad.go:%d:", headerLines+1+i)) {
			t.Errorf("the compiler accepted %s\n%s", l, out)
		}
	}
}
