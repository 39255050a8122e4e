package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/hibiken/asynq"
)

// asynqLogger sends asynq's own log lines through slog, so one process writes
// one format.
//
// It also keeps every dead letter to one line. The handler logs each dead
// letter it decides (msg=attempt, outcome=dead_letter, with the code), and
// asynq then logs "Retry exhausted for task id=…" for the same task when it
// archives it. The worker's error handler, which asynq calls just before that
// line, marks the task as already logged; the line is then dropped. asynq's
// line is kept for archives enrollq did not decide (a task out of retries
// after crashes), which nothing else logs.
type asynqLogger struct {
	l *slog.Logger
	// logged holds the IDs of tasks whose dead letter enrollq has logged
	// and asynq has yet to report; each entry is removed by that report.
	logged sync.Map
}

// newAsynqLogger adapts l to asynq.Logger; lines carry component=asynq. It is
// the worker's own (unexported): dropping the duplicate dead-letter line
// needs the worker's ErrorHandler, so it is of no use on another server.
func newAsynqLogger(l *slog.Logger) *asynqLogger {
	return &asynqLogger{l: l.With(slog.String("component", "asynq"))}
}

// retryExhausted is how asynq's processor starts the line it logs when it
// archives a task.
const retryExhausted = "Retry exhausted for task id="

// deadLetterLogged is asynq's ErrorHandler: asynq calls it with the
// handler's error right before it logs the task's archive, so a
// *DeadLetterError here means the handler already logged the dead letter.
func (a *asynqLogger) deadLetterLogged(ctx context.Context, _ *asynq.Task, err error) {
	var dle *DeadLetterError
	if !errors.As(err, &dle) {
		return
	}
	if id, ok := asynq.GetTaskID(ctx); ok {
		a.logged.Store(id, struct{}{})
	}
}

func (a *asynqLogger) log(level slog.Level, args []any) {
	msg := fmt.Sprint(args...)
	if id, ok := strings.CutPrefix(msg, retryExhausted); ok {
		if _, ours := a.logged.LoadAndDelete(id); ours {
			return // said once already, by the handler, with its code
		}
		a.l.Log(context.Background(), level, "archived by asynq: retries exhausted", slog.String("task_id", id))
		return
	}
	a.l.Log(context.Background(), level, msg)
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
