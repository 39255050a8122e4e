package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/deadletter"
)

// The durable dead-letter record follows a retry from the dashboard: when an
// operator runs an archived task in asynqmon, the task is back in play, so
// its record must go, or `enrollq dead` would keep listing (and `dead
// requeue` would enqueue again) a session that is already being retried.
// The worker also removes the record when it next runs the task, but only
// once a slot is free; the dashboard removes it at once, before it answers
// the UI, so the two views never disagree.
//
// Deleting an archived task in the dashboard does NOT delete its record, on
// purpose: asynq's archive is not the record of dead letters (it trims
// itself), and an operator who tidies asynq's view must not lose enrollq's
// history. Records are removed on purpose with `enrollq dead purge`.

// maxRequestBody is the most of a batch request body the follower reads;
// asynqmon refuses bodies over 1,000,000 bytes anyway.
const maxRequestBody = 1 << 20

// followTimeout bounds the Redis work that follows one request.
const followTimeout = 2 * time.Minute

// runKind is one of asynqmon's three ways to run archived tasks.
type runKind int

const (
	runOne   runKind = iota + 1 // POST …/archived_tasks/{task_id}:run
	runBatch                    // POST …/archived_tasks:batch_run {"task_ids": […]}
	runAll                      // POST …/archived_tasks:run_all
)

// runRequest is a request that runs archived tasks of one queue.
type runRequest struct {
	kind   runKind
	queue  string
	taskID string // runOne only
}

// matchRun reports whether a request is one of asynqmon's archived-task run
// routes under prefix (".../api/queues/"), the way asynqmon's router
// (gorilla/mux) reads them: on the decoded path, with {qname} and {task_id}
// each one or more characters other than '/'. Task IDs hold colons
// ("enroll:<uuid>"), so the ":run" suffix is cut from the end.
func matchRun(prefix, method, path string) (runRequest, bool) {
	if method != http.MethodPost {
		return runRequest{}, false
	}
	rest, ok := strings.CutPrefix(path, prefix)
	if !ok {
		return runRequest{}, false
	}
	queue, rest, ok := strings.Cut(rest, "/")
	if !ok || queue == "" {
		return runRequest{}, false
	}
	switch rest {
	case "archived_tasks:batch_run":
		return runRequest{kind: runBatch, queue: queue}, true
	case "archived_tasks:run_all":
		return runRequest{kind: runAll, queue: queue}, true
	}
	id, ok := strings.CutPrefix(rest, "archived_tasks/")
	if !ok {
		return runRequest{}, false
	}
	id, ok = strings.CutSuffix(id, ":run")
	if !ok || id == "" || strings.Contains(id, "/") {
		return runRequest{}, false
	}
	return runRequest{kind: runOne, queue: queue, taskID: id}, true
}

// follower wraps asynqmon and removes the dead-letter records of the
// archived tasks that a request ran.
type follower struct {
	next   http.Handler
	prefix string
	store  *deadletter.Store
	insp   *asynq.Inspector
	log    *slog.Logger
}

// batchRunBody is the body of asynqmon's batch_run request.
type batchRunBody struct {
	TaskIDs []string `json:"task_ids"`
}

// batchRunResult is asynqmon's answer to batch_run: the tasks that were moved
// to pending, and those that were not.
type batchRunResult struct {
	PendingIDs []string `json:"pending_ids"`
	ErrorIDs   []string `json:"error_ids"`
}

func (f *follower) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, ok := matchRun(f.prefix, r.Method, r.URL.Path)
	if !ok {
		f.next.ServeHTTP(w, r)
		return
	}
	// The Redis work goes on when the browser gives up: the tasks ran.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), followTimeout)
	defer cancel()

	// Note the records as they are before the run, so that only those
	// records are removed: a task that a worker takes at once and
	// dead-letters again gets a new record, which must stay.
	var before map[string]deadletter.Record
	switch req.kind {
	case runOne:
		before = f.snapshot(ctx, req.queue, []string{req.taskID})
	case runBatch:
		// Read the body for its task IDs and hand asynqmon an identical
		// one; a body asynqmon cannot read is its to refuse.
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
		if err != nil {
			http.Error(w, "reading the request: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
		var b batchRunBody
		if json.Unmarshal(body, &b) == nil {
			before = f.snapshot(ctx, req.queue, b.TaskIDs)
		}
	}

	// Hold asynqmon's answer until the records follow, so that whatever the
	// UI shows next already agrees with them.
	rec := &heldResponse{header: w.Header(), status: http.StatusOK}
	f.next.ServeHTTP(rec, r)
	if rec.status >= 200 && rec.status < 300 {
		switch req.kind {
		case runOne:
			f.forget(ctx, req.queue, []string{req.taskID}, before)
		case runBatch:
			var res batchRunResult
			if err := json.Unmarshal(rec.body.Bytes(), &res); err != nil {
				f.log.Warn("dashboard: batch run answer unreadable; the worker removes the dead-letter records when it runs the tasks", "queue", req.queue, "err", err)
			} else {
				f.forget(ctx, req.queue, res.PendingIDs, before)
			}
		case runAll:
			f.forgetRunAll(ctx, req.queue)
		}
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body.Bytes())
}

// snapshot returns the records of the given tasks of queue that exist.
func (f *follower) snapshot(ctx context.Context, queue string, ids []string) map[string]deadletter.Record {
	out := make(map[string]deadletter.Record, len(ids))
	for _, id := range ids {
		r, found, err := f.store.Get(ctx, id)
		if err != nil {
			f.log.Error("dashboard: reading a dead-letter record", "task_id", id, "queue", queue, "err", err)
			continue
		}
		if found && r.Queue == queue {
			out[id] = r
		}
	}
	return out
}

// forget removes the records of the tasks that ran, if they are still the
// ones noted before the run.
func (f *follower) forget(ctx context.Context, queue string, ran []string, before map[string]deadletter.Record) {
	for _, id := range ran {
		old, ok := before[id]
		if !ok {
			continue // no record: a task archived by hand, or one already purged
		}
		cur, found, err := f.store.Get(ctx, id)
		if err == nil && (!found || !cur.DeadAt.Equal(old.DeadAt)) {
			continue // gone already (the worker took it), or dead-lettered again
		}
		f.remove(ctx, queue, old, err)
	}
}

// forgetRunAll removes, after a run_all, the records of queue whose tasks
// asynq no longer has archived. A record whose task asynq no longer has at
// all stays: asynq trimmed its archive, and the record is the only trace of
// that dead letter (`enrollq dead requeue` brings it back).
func (f *follower) forgetRunAll(ctx context.Context, queue string) {
	var stale []deadletter.Record
	err := f.store.Each(ctx, deadletter.Query{Queue: queue}, func(r deadletter.Record) error {
		info, err := f.insp.GetTaskInfo(queue, r.TaskID)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			return nil
		case err != nil:
			return err
		case info.State != asynq.TaskStateArchived:
			stale = append(stale, r)
		}
		return nil
	})
	if err != nil {
		f.log.Error("dashboard: finding the dead-letter records of a run_all; the worker removes them when it runs the tasks", "queue", queue, "err", err)
	}
	for _, r := range stale {
		f.remove(ctx, queue, r, nil)
	}
}

// remove deletes one record and logs it; readErr is an error met while
// checking it, logged instead.
func (f *follower) remove(ctx context.Context, queue string, r deadletter.Record, readErr error) {
	err := readErr
	found := false
	if err == nil {
		found, err = f.store.Delete(ctx, r.TaskID)
	}
	switch {
	case err != nil:
		// The task runs anyway; the worker removes the record when it
		// takes the task.
		f.log.Error("dashboard: removing the dead-letter record of a task run from the dashboard", "task_id", r.TaskID, "queue", queue, "err", err)
	case found:
		f.log.Info("dead letter run from the dashboard: record removed", "task_id", r.TaskID, "queue", queue, "code", r.Code)
	}
}

// heldResponse keeps asynqmon's answer until the follower has done its work.
// The answers of the run routes are small (a status, or the lists of task
// IDs of one batch).
type heldResponse struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (h *heldResponse) Header() http.Header { return h.header }

func (h *heldResponse) WriteHeader(status int) {
	if !h.wrote {
		h.status, h.wrote = status, true
	}
}

func (h *heldResponse) Write(b []byte) (int, error) {
	h.wrote = true
	return h.body.Write(b)
}
