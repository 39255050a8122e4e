package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
)

// asynqLogger sends asynq's own log lines through slog, so one process writes
// one format.
type asynqLogger struct{ l *slog.Logger }

// NewAsynqLogger adapts l to asynq.Logger; lines carry component=asynq.
func NewAsynqLogger(l *slog.Logger) *asynqLogger {
	return &asynqLogger{l: l.With(slog.String("component", "asynq"))}
}

func (a *asynqLogger) log(level slog.Level, args []any) {
	a.l.Log(context.Background(), level, fmt.Sprint(args...))
}

func (a *asynqLogger) Debug(args ...any) { a.log(slog.LevelDebug, args) }
func (a *asynqLogger) Info(args ...any)  { a.log(slog.LevelInfo, args) }
func (a *asynqLogger) Warn(args ...any)  { a.log(slog.LevelWarn, args) }
func (a *asynqLogger) Error(args ...any) { a.log(slog.LevelError, args) }

// Fatal logs and exits with status 1, as asynq.Logger requires.
func (a *asynqLogger) Fatal(args ...any) {
	a.log(slog.LevelError, args)
	os.Exit(1)
}
