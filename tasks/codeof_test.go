package tasks

import "testing"

// CodeOf must not take any lower-case word before the first colon for a
// dead-letter code (a review found it did). Texts that asynq or the API client write are not codes, but they
// are what an archived task carries when asynq archived it itself: a task
// whose retries were used up by expired leases (worker crashes) ends with
// asynq.ErrLeaseExpired, "asynq: task lease expired". `enrollq dead list`,
// the dashboard and enqueue.DuplicateError.Code then show the code "asynq"
// (or "verisoul"), and `dead list --code` groups unrelated failures under it.
func TestCodeOfIgnoresLibraryPrefixes(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"asynq: task lease expired",
		"verisoul: status 503 (request_id r-1)",
		"waiting: verisoul: 429",
	} {
		if got := CodeOf(in); got != "" {
			t.Errorf("CodeOf(%q) = %q, want \"\" (not a dead-letter code)", in, got)
		}
	}
}
