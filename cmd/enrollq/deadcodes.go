package main

import (
	"context"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/enrollq/enrollq/deadletter"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/worker"
)

// neverRequeue holds the codes the README's runbook says not to requeue,
// with why: the API would answer the same again, or a person must look
// first. `dead requeue` asks for --force before it requeues one of them.
var neverRequeue = map[string]string{
	worker.CodeProjectMismatch:                 "the task named another project than the lane it was put in; requeued, it would go back to that lane: enqueue it again with --project",
	verisoul.CodeSessionOlderThan30Days:        "the session's 30-day enrollment window has ended; the API would answer the same again (the user must redo Face Match)",
	verisoul.CodeLivenessCheckFailed:           "the user failed the liveness check; only a new session can succeed",
	verisoul.CodeIDScanFailed:                  "the user failed the ID scan; only a new session can succeed",
	verisoul.CodeSessionNotValidForEndpoint:    "the session is of another kind; the API would answer the same again (fix the producer)",
	verisoul.CodeSessionAlreadyTiedToAnAccount: "another account has this session; investigate (duplicate accounts?) before enrolling it again",
}

// knownCodes returns, sorted, every code a dead letter can have: the API's
// documented codes, enrollq's own, and those already in the record (a code
// the API added that this version does not know is kept as it came).
func knownCodes(ctx context.Context, store *deadletter.Letters) ([]string, error) {
	counts, err := store.Ledger.DeadCounts(ctx)
	if err != nil {
		return nil, err
	}
	codes := append(slices.Clone(verisoul.Codes), worker.CodeTransientExhausted, worker.CodeInvalidPayload, worker.CodeProjectMismatch, worker.CodeBadRequest, codeArchivedOutside, codeTaskDeleted)
	for c := range counts {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	return slices.Compact(codes), nil
}

// checkCode returns a usage error listing the known codes when code (from
// --code) is none of them, so a typo is not answered with "no dead letters".
// An empty code selects every code and passes.
func checkCode(ctx context.Context, store *deadletter.Letters, code string) error {
	if code == "" {
		return nil
	}
	codes, err := knownCodes(ctx, store)
	if err != nil {
		return err
	}
	if slices.Contains(codes, code) {
		return nil
	}
	return usageErr("--code: unknown code %q; known codes: %s", code, strings.Join(codes, ", "))
}

// refuseNeverRequeue returns a usage error when recs hold codes of
// neverRequeue, naming each with its count and why, unless force.
func refuseNeverRequeue(recs []ledger.Record, force bool) error {
	if force {
		return nil
	}
	n := map[string]int{}
	for _, r := range recs {
		if _, ok := neverRequeue[r.Code]; ok {
			n[r.Code]++
		}
	}
	if len(n) == 0 {
		return nil
	}
	codes := make([]string, 0, len(n))
	for c := range n {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	var b strings.Builder
	for i, c := range codes {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(c + " (" + strconv.Itoa(n[c]) + "): " + neverRequeue[c])
	}
	return usageErr("dead requeue: the runbook says not to requeue %s; add --force to requeue anyway", b.String())
}

// The codes ledger.Reconcile gives a live session whose task asynq no
// longer runs (archived or deleted from outside the worker).
const (
	codeArchivedOutside = "archived_outside"
	codeTaskDeleted     = "task_deleted"
)
