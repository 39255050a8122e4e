package outcomes

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/enrollq/enrollq/ledger"
)

// TailOptions select what Tail reads.
type TailOptions struct {
	// Since: events at or after this time.
	Since time.Time
	// Limit is the most past events read (ledger.Ledger.Outcomes's max).
	Limit int
	// Follow keeps reading new events until the context ends.
	Follow bool
	// Every is how often a Follow reads the streams again. Default 200 ms.
	Every time.Duration
	// Log is told of the events that are skipped because they cannot be
	// made public events. Default slog.Default().
	Log *slog.Logger
}

// Tail calls each with the outcome events of the ledger's streams since
// o.Since, oldest first, each once; with o.Follow it goes on with new ones
// as they are appended. It returns nil when ctx ends (or, without Follow,
// once the past events are read), the first error of each, or the error of
// a read (which it does not wrap).
func Tail(ctx context.Context, l *ledger.Ledger, o TailOptions, each func(Event) error) error {
	if o.Every <= 0 {
		o.Every = 200 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	since, seen := o.Since, map[string]bool{}
	for {
		evs, err := l.Outcomes(ctx, since, o.Limit)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, le := range evs {
			if le.At.After(since) {
				since = le.At
			}
		}
		next := map[string]bool{}
		for _, le := range evs {
			// Events of the last millisecond are read again next time
			// (the streams are read from a time): give each once.
			if le.At.Equal(since) {
				next[le.ID] = true
			}
			if seen[le.ID] {
				continue
			}
			ev, err := FromLedger(le)
			if err != nil {
				o.Log.Warn("skipping an event", "error", err)
				continue
			}
			if err := each(ev); err != nil {
				return err
			}
		}
		seen = next
		if !o.Follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(o.Every):
		}
	}
}

// Line is the event as one line for people (`enrollq outcomes tail`):
// time, type, session, account, queue, then what the type carries.
func (ev Event) Line() string {
	d := ev.Data
	if ev.Type == TypeBackfillCompleted {
		return fmt.Sprintf("%s  %-22s run=%s name=%q totals=%s", ev.Timestamp.Format(time.RFC3339), ev.Type, d.Run, d.Name, d.Totals)
	}
	line := fmt.Sprintf("%s  %-22s %s  account=%s queue=%s", ev.Timestamp.Format(time.RFC3339), ev.Type, d.SessionID, d.AccountID, d.Queue)
	if d.RequestID != "" {
		line += " request_id=" + d.RequestID
	}
	if d.Reconciled != nil && *d.Reconciled {
		line += " reconciled"
	}
	if d.Code != "" {
		line += " code=" + d.Code
	}
	if d.Action != "" {
		line += " action=" + d.Action
	}
	if d.RequeuedBy != "" {
		line += " by=" + d.RequeuedBy
	}
	return line
}
