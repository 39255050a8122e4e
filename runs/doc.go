// Package runs follows backfills as tracked runs: each `enrollq backfill`
// (or EnrollMany given a run) has a run id, and every ledger record it
// creates carries that id and its input line. A run is counters, never a
// list of its rows: the ledger's transitions keep per-run counts by state,
// dead letters by code and a rate ring of final transitions (a few hundred
// bytes per run and shard), and the run's record holds the producer's side
// (input, checksum, enqueue-side counts).
//
// From them this package answers, in one round trip whatever the run's
// size: how far along a run is at the API side and when it will end
// (Progress, with an ETA from the rate the run really got over the last
// minutes); it fires the run's backfill.completed event once when its last
// row reaches a final state (Check, Watcher); it cancels a run (Cancel:
// waiting rows leave the queues and their records say cancelled; rows in
// flight finish); it exports per-run metrics for active runs (Collector);
// and it writes a run's report, one line per input row, by reading the
// input again and looking each row up in the ledger (Report).
package runs
