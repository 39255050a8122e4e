package backfill_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/enrollq/enrollq/backfill"
)

// BenchmarkReadRowsCSV reads a 10,000-row CSV (header, two ids, a
// created_at and a note, one quoted field in ten spanning two lines) per
// op; rows/s is the figure to compare:
//
//	go test ./backfill -run '^$' -bench ReadRowsCSV -count 3
func BenchmarkReadRowsCSV(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString("session_id,account_id,created_at,note\n")
	const rows = 10_000
	for i := range rows {
		note := "a note"
		if i%10 == 0 {
			note = "\"two\nlines, quoted\""
		}
		fmt.Fprintf(&buf, "%08d-ae5d-45a2-8d9f-4a5b573c3271,acct-%d,2026-11-01T10:00:00Z,%s\n", i, i, note)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		for _, err := range backfill.ReadRows(bytes.NewReader(data), backfill.FormatCSV) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != rows {
			b.Fatalf("%d rows", n)
		}
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
}
