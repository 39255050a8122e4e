package backfill

import (
	"fmt"
	"time"
)

// Summary counts what happened to the rows of a Run. Every row read is in
// exactly one of the counts after Read, so that they add up:
//
//	Read = Enqueued + AlreadyQueued + AlreadyEnrolled + DeadLettered +
//	       Duplicates + Rejected + Failed + NotAttempted + Skipped
type Summary struct {
	// Read is every row read, rejected ones and skipped ones included.
	Read int
	// Enqueued rows got a new task; in a dry run, the rows found valid.
	Enqueued int
	// AlreadyQueued, AlreadyEnrolled and DeadLettered rows are sessions
	// that had a task before the run (enqueue.ErrAlreadyQueued, …): nothing
	// to do.
	AlreadyQueued, AlreadyEnrolled, DeadLettered int
	// Duplicates repeat the session of an earlier row of the file
	// (enqueue.ErrDuplicateRow) for the same account.
	Duplicates int
	// Rejected rows cannot be read or are invalid (the rejects file holds
	// them); Mismatched of them name a session held for another account.
	Rejected, Mismatched int
	// Failed rows met a Redis failure (the run stopped there);
	// NotAttempted rows were read but never enqueued, because the run was
	// interrupted or stopped first.
	Failed, NotAttempted int
	// Skipped rows start before Options.FromLine.
	Skipped int
	// Expired of the Enqueued rows are past their 30-day enrollment window:
	// the workers dead-letter them as session_older_than_30_days without
	// calling the API.
	Expired int
	// DryRun says nothing was enqueued.
	DryRun bool
	// Elapsed is how long the run took (so far, while it runs).
	Elapsed time.Duration
	// ResumeLine is the first line whose row may not be enqueued: a run
	// resumed with Options.FromLine set to it skips only rows that are
	// done. It is the line after the last row read when every row read has
	// its outcome.
	ResumeLine int
}

// Waiting is the rows that had a task already (queued, enrolled,
// dead-lettered) or repeat an earlier row: skipped as duplicates.
func (s Summary) Waiting() int {
	return s.AlreadyQueued + s.AlreadyEnrolled + s.DeadLettered + s.Duplicates
}

// Rate is rows read per second.
func (s Summary) Rate() float64 { return float64(s.Read) / max(s.Elapsed.Seconds(), 1e-9) }

// String is the summary in words: "read 12 rows in 1.2s (10 rows/s): 9
// enqueued, 1 already queued, …", naming the counts that are not zero
// after the first ones.
func (s Summary) String() string {
	verb := "enqueued"
	if s.DryRun {
		verb = "valid (dry run: nothing enqueued)"
	}
	out := fmt.Sprintf("read %d rows in %s (%.0f rows/s): %d %s, %d already queued, %d already enrolled, %d dead-lettered, %d duplicates in the file, %d rejected",
		s.Read, s.Elapsed.Round(time.Millisecond), s.Rate(), s.Enqueued, verb, s.AlreadyQueued, s.AlreadyEnrolled, s.DeadLettered, s.Duplicates, s.Rejected)
	if s.Mismatched > 0 {
		out += fmt.Sprintf(" (%d of them for a session held for another account)", s.Mismatched)
	}
	if s.Failed > 0 {
		out += fmt.Sprintf(", %d failed", s.Failed)
	}
	if s.NotAttempted > 0 {
		out += fmt.Sprintf(", %d not attempted", s.NotAttempted)
	}
	if s.Skipped > 0 {
		out += fmt.Sprintf(", %d skipped before --from-line", s.Skipped)
	}
	if s.Expired > 0 {
		out += fmt.Sprintf("; %d past the 30-day window: the workers dead-letter them as session_older_than_30_days without calling the API", s.Expired)
	}
	return out
}
