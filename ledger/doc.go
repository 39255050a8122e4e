// Package ledger keeps the one record per session that says what happened
// to it — queued, calling, waiting, retrying, enrolled, dead, requeued — with
// a short history, and an outcome stream of its final transitions. asynq's
// queues carry the work; asynq's archive and task results are views, never
// the source. Outside tools (the asynq CLI, asynqmon, asynq's recoverer and
// archive trimming) change asynq's state without the ledger, and Reconcile
// brings the record back in line; nothing they do can break the record.
//
// The worker (Claim, Renew, Enrolled, Dead, Retry, Wait), enqueue (Queued,
// Unqueue, Moved, the duplicate answers), `enrollq dead|status|stats|outcomes`
// and the reconcile package (Reconcile, on read and from the worker's
// sweeper) are its callers.
//
// # Transitions and who calls them
//
// Every transition is one Lua script, so one round trip and one atomic step
// (no WATCH loops): it reads the record, checks that the transition is
// allowed from its state, writes the new record, keeps the account index
// and the run counters, and for a final transition appends the outcome
// event, all or nothing. Refused transitions write nothing and return a
// *StateError matching ErrNotFound, ErrExists, ErrConflict, ErrEnrolled,
// ErrDead or ErrWrongState (errors.Is); bad arguments return ErrInvalid
// naming the field. Times are Redis's clock (TIME inside the script).
//
//	from → to                                   call                    caller
//	none → queued                               Queued                  enqueue (before asynq's enqueue; Unqueue undoes it if that fails)
//	any record → (refused, ErrExists)           Queued                  enqueue: the duplicate answer (Record.State, Code, RequestID)
//	none|queued|waiting|retrying|requeued → calling
//	                                            Claim                   worker, before admission and the call
//	calling, lease expired → calling (Crashed)  Claim                   worker: the lost-response rule
//	calling → calling (longer lease)            Renew                   worker, for a long attempt
//	calling → enrolled      (+ event)           Enrolled                worker (reconciled: the tied-answer rule)
//	calling → dead          (+ event)           Dead                    worker
//	calling → retrying                          Retry                   worker (counted retry)
//	calling → waiting                           Wait                    worker (429, not ready, breaker, not admitted)
//	queued…requeued (not calling) → same, other queue
//	                                            Moved                   enqueue: a signup moves a session waiting in backfill
//	dead → requeued         (+ event)           Requeue                 `enrollq dead requeue`
//	dead → (removed)                            Purge                   `enrollq dead purge`
//	queued|waiting|retrying|requeued → cancelled Cancel                 `enrollq runs cancel` (after CancelRun; also Claim, and a settled retry or wait, of a cancelled run's row)
//	cancelled → queued (same account)           Queued                  enqueue: a cancelled session enqueued again
//	(run) → completed (+ event, once)           CompleteRun             the runs package, when a run's last row is final
//	dead → requeued, live → dead (+ event)      Reconcile               dashboard follower, a sweeper over asynq, the worker
//	enrolled|idle live → (removed)              Sweep                   one process, about hourly
//	account fenced: Claim, Queued → ErrFenced   Fence, Unfence          package forget (fence.go)
//	every record of an account → (removed)      EraseAccount            package forget, after the remote delete
//	(read)                                      InFlight                package forget: claims still live
//	(stream) account.deleted|delete_failed      AccountEvent            package forget
//	(read)                                      Status, ByAccount       `enrollq status`, enqueue, the HTTP API
//	(read)                                      Counts, RunCounts, Counters  `enrollq stats`, `enrollq runs`
//	(read)                                      Lookup                  `enrollq runs report` (many sessions, aligned)
//	(read)                                      Outcomes                `enrollq outcomes tail`, tests
//	(read)                                      DeadList, DeadCounts    `enrollq dead list|counts|export|requeue|purge`
//
// Claim replaces the worker's per-session call lock: it succeeds only when
// no other claim's lease is live, whatever queue the task came from. The
// caller sizes the lease (call timeout, blip retries, a margin) and may
// Renew it. The claim's token is the record's generation (Gen, bumped by
// every transition), and every settle (Enrolled, Dead, Retry, Wait)
// compares it: an attempt whose lease ran out and was taken over cannot
// overwrite its successor. A record in "calling" whose lease has run out is
// an attempt that crashed or lost its lease mid-call: its outcome is
// unknown, so the next Claim stores Unknown and reports Crashed, and an
// answer session_already_tied_to_an_account is then reconciled as our own
// enrollment (README, "Outcome of one attempt"). Unknown, NotReadySince and
// WaitSince follow CallFacts exactly as worker/state.go keeps them today.
//
// Claim on a dead record returns ErrDead: when asynq's retry count is
// higher than the record's AsynqRetried, asynq re-ran the task after the
// worker recorded the dead letter but crashed before asynq archived it, so
// the worker finishes it as dead without a call; otherwise an operator ran
// it (asynqmon "Run"), and the worker calls Reconcile (→ requeued) and
// claims again. Claim on an enrolled record returns ErrEnrolled: a second
// task of the session completes without a call.
//
// Reconcile(session, asynqState, asynqRetried) is the pure ledger side of
// keeping right when asynq changes behind the ledger's back: dead + a task
// asynq will run at no more than the dead letter's retry count → requeued
// (by "asynq"); at a higher count it is asynq's re-run after a crash and
// stays dead; a live record (not a live claim) whose task is gone → dead
// with code task_deleted, archived outside the worker → dead with
// archived_outside (both requeueable; a crashed claim keeps Unknown);
// a completed task the ledger never saw enrolled → "drift", left alone
// (the outcome is unknown; the next attempt's reconciliation settles it);
// enrolled never changes. A live record younger than ReconcileGrace is
// spared when its task is missing (its enqueue may be under way). The
// caller that lists asynq's tasks (a sweeper, the dashboard follower) is
// the next session's work.
//
// A payload that does not decode has no valid session id, so its
// invalid_payload dead letter cannot be in the ledger: it stays in asynq's
// archive (and today's deadletter record).
//
// # Key scheme
//
// Sessions are spread over Shards (16) hash-tag shards by a 64-bit FNV-1a
// hash of the session's 16 bytes, and within a shard over Options.Buckets
// (2048) buckets:
//
//	{<prefix>ledger:<shard>}:live:<b>   hash: session (16 raw bytes) → record, states queued…requeued
//	{<prefix>ledger:<shard>}:done:<b>   hash: the same, enrolled
//	{<prefix>ledger:<shard>}:dead:<b>   hash: the same, dead (never expires)
//	{<prefix>ledger:<shard>}:acct:<a>   hash: account hash (8 bytes) ‖ session (16 bytes) → ""; a = account hash's bucket
//	{<prefix>ledger:<shard>}:out        stream: the shard's outcome events, MAXLEN ~ Options.StreamMaxLen
//	{<prefix>ledger:<shard>}:runs       hash: counters — "*|<state>", "code:<code>"
//	{<prefix>ledger:<shard>}:runs:<run> hash: the run's counters in this shard — "<state>", "reconciled", "code:<code>", "t0".."t35" (rate ring), "first", "cancel"
//	{<prefix>ledger:<shard of run>}:run:<run>  hash: the run's record (RunInfo)
//	<prefix>runs, <prefix>runs:active   sorted sets: run ids by start (all; not yet completed)
//	{<prefix>ledger:<shard>}:dead-by-time  zset: session (16 raw bytes) → dead-letter time (unix s)
//	{<prefix>ledger:<shard>}:fence  hash: account hash (8 bytes) → forget request id, while the account is forgotten
//
// A record and its bucket move between live, done and dead as the state
// changes (so one bucket kind's values stay alike in size). The account
// index entry lives in the session's shard, not the account's, so that the
// record, its index entry, its shard's stream and run counters are on one
// Cluster slot and every script touches that slot only; ByAccount reads the
// account's bucket in all 16 shards (pipelined) and then the records. A
// per-session key and a global stream could not share a slot; readers of
// the outcome stream merge the 16 shard streams (Outcomes does).
//
// # Record layout and memory
//
// Bucketing instead of one key per session saves Redis's per-key overhead
// (about 70–100 bytes with its dictionary entry and expiry), and a small
// hash (at most 512 fields of at most 64 bytes, Redis 7's defaults) is
// stored as one listpack: about 2 bytes of overhead per field. A record is a
// MessagePack array (the scripts read and write it with Redis's cmsgpack,
// or their own pure-Lua codec where the server's Lua has none: msgpack.go)
// with positional fields: state, generation, at (unix s), expires (unix s;
// 0 for dead), account hash, queue ("s", "b" or "=<name>"), run,
// attempts (the run field is "<run>|<input line in base 36>" for a row of
// a run), two state-dependent fields (enrolled: request id — 16 raw bytes
// when it is a UUID — and reconciled; dead: code, last error; retrying:
// next at, last error; waiting: why, until; requeued: former code, by) and
// the history (up to 4 earlier states as state, seconds-before pairs); then,
// for every state but enrolled, the account id, dead's request id and asynq
// retry count, unknown, lease (ms), not-ready since, waiting since and first
// attempt. Enrolled records drop those trailing fields — including the
// account id, so ByAccount finds them by the account's 64-bit hash — and
// shed their oldest history while over 64 bytes, so an enrolled record is
// at most 64 bytes whatever the account id's length, and done buckets stay
// listpacks (as long as the request id is a UUID and the run id at most
// about 12 bytes; a longer one turns that record's bucket into a hash
// table: correct, only bigger). Last errors are cut to 200 bytes (retrying) and 2,000 (dead).
//
// Measured by TestMemoryPerSession (100,000 sessions queued, claimed and
// enrolled with default Options on a private redis-server 7.0, INFO memory
// used_memory delta): see README "Ledger" for the figure. The default
// Buckets trades a little at small sizes (a bucket key costs about 100
// bytes, shared by fewer sessions) for staying listpacks up to about 13
// million retained sessions, the most the default rate limit enrolls in 30
// days; past that buckets turn into hash tables one by one (roughly twice
// the bytes per session) — raise Buckets for a larger window (it is fixed
// for the life of the data, like Shards). With 512 buckets per shard the
// same 100,000 sessions cost about 109 bytes each, but the buckets fill
// at about 3.7 million.
//
// Expiry: Redis 7.0 has no per-field TTL (HEXPIRE is 7.4), so each record
// carries its expiry and Sweep removes enrolled records (and live ones idle
// for the retention period) with their index entries, comparing the
// generation it read so a record that moved on stays. Dead records have no
// expiry; Purge removes them.
//
// # Outcome stream
//
// Each final transition — enrolled (reconciled or not), dead (by the worker
// or by Reconcile) — and each requeue appends one entry to its shard's
// stream in the same script, so no outcome is recorded without its event or
// the reverse. Entry fields:
//
//	ev    enrolled | dead | requeued
//	sid   session id (text)
//	acct  account id
//	q     queue
//	run   backfill run ("" when none)
//	n     attempts that called the API
//	rid   enrolled, dead: Verisoul's request id ("" when none)
//	rc    enrolled: "1" when reconciled
//	code  dead: the dead-letter code; requeued: the code it had
//	err   dead: the last error
//	by    requeued: who ("cli", "asynq", …)
//
// The event's time is its stream id's; its stable, unique id is
// "<shard>-<stream id>". The streams are capped buffers for consumers
// (webhooks, `enrollq outcomes tail`, both later), not the record: the
// record is the truth, and a consumer that fell behind the cap catches up
// from ByAccount / Status.
//
// # Counters
//
// Every transition moves one count from its old state to its new one in
// the shard's runs hash (HINCRBY in the same script): under "*" for all
// sessions (Counts, for `enrollq stats`), and, when the session has a run,
// in the run's own hash in the shard (Counters, RunCounts, for `enrollq
// runs`), with the run's reconciled and dead-by-code counts and a ring of
// its final transitions per 10-second slot over the last 6 minutes (the
// observed rate an ETA divides by). A run costs counters, never a list of
// its rows. Counts sums the 16 shards. A cancelled record stays in its live
// bucket (with its account, until the retention ends) but is final:
// EachLive skips it.
// Purge and Unqueue take the session out of both; expiry takes it out of
// "*" only (a run's counts are its history). Dead letters are also counted
// by code ("code:<code>", DeadCounts) and indexed by time in each shard's
// dead-by-time zset (DeadList, newest first, filtered by code): a dead
// letter enters both in the script that records it and leaves them in the
// one that requeues or purges it.
package ledger
