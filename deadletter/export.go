package deadletter

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"strconv"
	"time"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/tasks"
)

// Export formats.
const (
	// FormatCSV is valid backfill input: its first columns are backfill's
	// (session_id, account_id, created_at); backfill ignores the rest.
	FormatCSV = "csv"
	// FormatJSONL is one Record a line, as `dead list --json` prints.
	FormatJSONL = "jsonl"
)

// csvHeader are FormatCSV's columns.
var csvHeader = []string{"session_id", "account_id", "created_at", "code", "last_error", "dead_at", "queue", "task_id", "attempts", "project"}

// Export writes the dead letters f selects to w in format (FormatCSV or
// FormatJSONL), shard by shard, newest first within a shard, and returns
// how many it wrote. It reads them 500 at a time and checks each page
// against asynq in one round trip (reconcile.CheckPage), which also brings
// each session's created_at from its task's payload while asynq keeps the
// task (the ledger does not hold it); a dead letter whose task was run
// again from outside is requeued in the ledger and left out.
func (d *Letters) Export(ctx context.Context, w io.Writer, f Filter, format string) (int, error) {
	if format != FormatCSV && format != FormatJSONL {
		return 0, invalid("format: must be %s or %s, got %q", FormatCSV, FormatJSONL, format)
	}
	if err := d.prepare(ctx, f.Code); err != nil {
		return 0, err
	}
	enc := json.NewEncoder(w)
	cw := csv.NewWriter(w)
	if format == FormatCSV {
		_ = cw.Write(csvHeader)
	}
	n := 0
	err := d.Ledger.DeadPages(ctx, f.Code, func(recs []ledger.Record) error {
		checked, _, err := reconcile.CheckPage(ctx, d.Ledger, keep(recs, f))
		if err != nil {
			return err
		}
		for _, c := range checked {
			if c.Record.State != ledger.StateDead {
				continue
			}
			n++
			r := RecordOf(c.Record)
			if p, err := tasks.DecodeEnrollPayload(c.Task.Payload()); c.Task.Payload() != nil && err == nil {
				r.CreatedAt = p.CreatedAt
			}
			if format == FormatJSONL {
				err = enc.Encode(r)
			} else {
				err = cw.Write(csvRow(r))
			}
			if err != nil {
				return err
			}
		}
		cw.Flush()
		return cw.Error()
	})
	if err == nil {
		cw.Flush()
		err = cw.Error()
	}
	return n, err
}

// keep returns the records of recs that f keeps.
func keep(recs []ledger.Record, f Filter) []ledger.Record {
	out := recs[:0:0]
	for _, r := range recs {
		if f.keeps(r) {
			out = append(out, r)
		}
	}
	return out
}

func csvRow(r Record) []string {
	created := ""
	if !r.CreatedAt.IsZero() {
		created = r.CreatedAt.Format(time.RFC3339Nano)
	}
	return []string{r.SessionID, r.AccountID, created, r.Code, r.LastError, r.DeadAt.Format(time.RFC3339Nano), r.Queue, r.TaskID, strconv.Itoa(r.Attempts), r.Project}
}
