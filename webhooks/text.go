package webhooks

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/enrollq/enrollq/outcomes"
)

// WriteStatus writes sts as the table `enrollq webhooks status` prints:
// one row per endpoint, times in RFC 3339 with how long ago they were at
// now.
func WriteStatus(w io.Writer, sts []Status, now time.Time) error {
	when := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339) + " (" + now.Sub(t).Round(time.Second).String() + " ago)"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tURL\tSTATE\tLAST SUCCESS\tFAILING SINCE\tBACKLOG\tOLDEST UNDELIVERED\tFAILED")
	for _, s := range sts {
		state := "ok"
		switch {
		case !s.Started:
			state = "not started"
		case !s.Disabled.IsZero():
			state = "disabled: " + s.DisabledReason
		case !s.FailingSince.IsZero():
			state = "failing: " + s.LastError
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\n", s.Name, s.URL, state, when(s.LastSuccess), when(s.FailingSince), s.Backlog, when(s.Oldest), s.Failed)
	}
	return tw.Flush()
}

// WriteFailures writes fs as the table `enrollq webhooks failed` prints.
func WriteFailures(w io.Writer, fs []Failure) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tEVENT\tTYPE\tSESSION\tAT\tGAVE UP\tLAST ERROR")
	for _, f := range fs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Endpoint, f.EventID, f.Type, f.SessionID, f.At.Format(time.RFC3339), f.FailedAt.Format(time.RFC3339), f.LastError)
	}
	return tw.Flush()
}

// Tested is the answer of one endpoint to a webhook.test event (SendTests).
type Tested struct {
	Endpoint Endpoint
	Event    outcomes.Event
	Result   Result
}

// String is the line `enrollq webhooks test` prints: the verdict, the
// endpoint, the answer (with its body), how long it took and the event id.
func (t Tested) String() string {
	answer := t.Result.String()
	if body := strings.TrimSpace(t.Result.Body); t.Result.Err == nil && body != "" {
		answer += ": " + body
	}
	return fmt.Sprintf("%s %s %s → %s in %s (webhook-id %s)", verdict(t.Result), t.Endpoint.Name, t.Endpoint.ShownURL(), answer, t.Result.Duration.Round(time.Millisecond), t.Event.ID)
}

// String is the line `enrollq webhooks replay` prints for the event: the
// verdict, the endpoint, the event's id, type and session, and the answer.
func (r Replayed) String() string {
	return fmt.Sprintf("%s %s %s %s %s → %s", verdict(r.Result), r.Endpoint, r.Event.ID, r.Event.Type, r.Event.Data.SessionID, r.Result.String())
}

func verdict(r Result) string {
	if r.OK() {
		return "ok"
	}
	return "FAILED"
}
