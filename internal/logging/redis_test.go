package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestRedisLoggerSuppressesRepeats: go-redis's pool repeats its dial failure
// about three times a second while Redis is down; one line of each kind is
// logged per redisLogEvery, and the next says how many it stands for.
func TestRedisLoggerSuppressesRepeats(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := &redisLogger{
		log:        slog.New(slog.NewJSONHandler(&buf, nil)),
		level:      slog.LevelWarn,
		last:       map[string]time.Time{},
		suppressed: map[string]int{},
	}
	ctx := context.Background()
	const dial = "redis: connection pool: failed to dial after %d attempts: %v"
	for range 22 {
		l.Printf(ctx, dial, 5, "connection refused")
	}
	l.Printf(ctx, "sentinel: new master=%q", "mymaster")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines for 22 dial failures and a failover, want 2:\n%s", len(lines), buf.String())
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || first["msg"] != "connection pool: failed to dial after 5 attempts: connection refused" {
		t.Errorf("first line %s (%v)", lines[0], err)
	}

	// Once the window has passed, the next line counts the ones held back.
	buf.Reset()
	l.last[dial] = time.Now().Add(-redisLogEvery)
	l.Printf(ctx, dial, 5, "connection refused")
	if !strings.Contains(buf.String(), `"suppressed":21`) {
		t.Errorf("after the window: %s, want suppressed=21", buf.String())
	}
}
