// Package logging builds enrollq's process logger (slog: tint's text on a
// terminal, JSON elsewhere) and routes go-redis's own log lines through it,
// with repeats held back.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/lmittmann/tint"
	"github.com/redis/go-redis/v9"
	"golang.org/x/term"
)

// New builds a logger writing to w: tint's coloured text on a terminal (or
// with format "text"), JSON otherwise (or with format "json"), at level
// (LOG_LEVEL: debug, info, warn, error; anything else is info). tty says
// whether w is a terminal.
func New(level, format string, w io.Writer, tty bool) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	if format == "" {
		format = "json"
		if tty {
			format = "text"
		}
	}
	if strings.EqualFold(format, "text") {
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: lv, TimeFormat: time.TimeOnly, NoColor: !tty, ReplaceAttr: durationsAsText}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv, ReplaceAttr: durationsAsText}))
}

// durationsAsText writes every duration the way Go and our flags spell it
// ("30s", "1.2ms"): slog's JSON handler would write integer nanoseconds
// (30000000000), which nobody reads at a glance and which looks like a
// different unit beside the flags'.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// TempFile builds a logger (as New, without colour) writing to a new file
// named by pattern (os.CreateTemp's) in the temporary directory, for a
// command whose own output must stand alone on a terminal. It returns the
// file's path and the function that closes it.
func TempFile(level, format, pattern string) (log *slog.Logger, path string, closeFile func(), err error) {
	f, err := os.CreateTemp("", pattern)
	if err != nil {
		return nil, "", nil, err
	}
	return New(level, format, f, false), f.Name(), func() { _ = f.Close() }, nil
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// redisLogger routes go-redis's own log lines (it logs, for instance, every
// failed dial of its pool) through slog, so that they share the process's
// format instead of writing plain "redis: 2026/12/01 …" lines into a JSON
// log. level is the slog level they get.
//
// While Redis is down the pool logs the same failure about three times a
// second; a line whose format was logged less than redisLogEvery ago is
// counted instead, and the next one logged says how many it stands for
// (suppressed=N). The outage itself is reported by the command (the
// worker's "redis unreachable").
type redisLogger struct {
	log   *slog.Logger
	level slog.Level

	mu         sync.Mutex
	last       map[string]time.Time // format → when a line of it was last logged
	suppressed map[string]int       // format → lines counted since then
}

// redisLogEvery is how often one kind of go-redis line is logged at most.
const redisLogEvery = 30 * time.Second

// Printf implements go-redis's internal.Logging.
func (l *redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if ctx == nil {
		ctx = context.Background()
	}
	if !l.log.Enabled(ctx, l.level) {
		return
	}
	now := time.Now()
	l.mu.Lock()
	if t, ok := l.last[format]; ok && now.Sub(t) < redisLogEvery {
		l.suppressed[format]++
		l.mu.Unlock()
		return
	}
	n := l.suppressed[format]
	l.last[format], l.suppressed[format] = now, 0
	l.mu.Unlock()
	var attrs []any
	if n > 0 {
		attrs = append(attrs, slog.Int("suppressed", n))
	}
	l.log.Log(ctx, l.level, strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "), attrs...)
}

// RouteRedis sends go-redis's lines to log at level. go-redis has one
// logger per process, so the last call wins.
//
// Commands that report a Redis failure themselves (every command that runs
// once and exits) pass slog.LevelDebug: the command's one error line says it
// all, and the pool's own lines appear only with LOG_LEVEL=debug.
// Long-running ones pass slog.LevelWarn.
func RouteRedis(log *slog.Logger, level slog.Level) {
	redis.SetLogger(&redisLogger{
		log:        log.With(slog.String("component", "redis")),
		level:      level,
		last:       map[string]time.Time{},
		suppressed: map[string]int{},
	})
}
