package deadletter

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/enrollq/enrollq/ledger"
)

// WriteTable writes dead letters as a table for people, one a line: when
// it died, code, session, account, project, queue, attempts and the last
// error (without its code, cut to 80 characters).
func WriteTable(w io.Writer, recs []ledger.Record) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEAD AT\tCODE\tSESSION\tACCOUNT\tPROJECT\tQUEUE\tATTEMPTS\tLAST ERROR")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.At.UTC().Format(time.RFC3339), r.Code, r.SessionID, short(r.AccountID, 24),
			r.Project(), r.Queue, r.Attempts, short(strings.TrimPrefix(r.LastError, r.Code+": "), 80))
	}
	return tw.Flush()
}

// WriteJSONL writes dead letters one JSON object a line (RecordOf), as
// `dead list --json` prints them.
func WriteJSONL(w io.Writer, recs []ledger.Record) error {
	enc := json.NewEncoder(w)
	for _, r := range recs {
		if err := enc.Encode(RecordOf(r)); err != nil {
			return err
		}
	}
	return nil
}

// short is s on one line, cut to n runes with an ellipsis.
func short(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// WriteCounts writes counts by code (Counts) as a table for people, the
// most frequent first, then their total.
func WriteCounts(w io.Writer, counts map[string]int) error {
	codes := slices.SortedFunc(maps.Keys(counts), func(a, b string) int {
		return cmp.Or(cmp.Compare(counts[b], counts[a]), cmp.Compare(a, b))
	})
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "COUNT\tCODE\t")
	total := 0
	for _, code := range codes {
		fmt.Fprintf(tw, "%d\t%s\t\n", counts[code], code)
		total += counts[code]
	}
	fmt.Fprintf(tw, "%d\ttotal\t\n", total)
	return tw.Flush()
}
