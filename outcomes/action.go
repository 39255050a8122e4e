package outcomes

// What the application should do about a failed enrollment: the "action"
// field of enrollment.failed. They are stable strings; receivers switch on
// them.
const (
	// ActionNewSessionNeeded: the session can never enroll (the user failed
	// the check, or the 30-day window ended); ask the user to redo Face
	// Match, which makes a new session.
	ActionNewSessionNeeded = "new_session_needed"
	// ActionFixProducer: the task itself is wrong (unknown session, a
	// session of another kind, a payload that does not decode); fix what
	// enqueues it.
	ActionFixProducer = "fix_producer"
	// ActionRetryLater: the API kept failing transiently until the retry
	// budget ran out; the session may still enroll if requeued later.
	ActionRetryLater = "retry_later"
	// ActionWaitForUser: the user has not finished the session; enqueue it
	// again once they have.
	ActionWaitForUser = "wait_for_user"
	// ActionInvestigate: needs a person — another account holds the
	// session, or the code is one this table does not know.
	ActionInvestigate = "investigate"
)

// actions maps dead-letter codes to actions. Codes missing here get
// ActionInvestigate.
var actions = map[string]string{
	"liveness_check_failed":               ActionNewSessionNeeded,
	"id_scan_failed":                      ActionNewSessionNeeded,
	"session_older_than_30_days":          ActionNewSessionNeeded,
	"session_not_found":                   ActionFixProducer,
	"session_not_valid_for_this_endpoint": ActionFixProducer,
	"invalid_payload":                     ActionFixProducer,
	"project_mismatch":                    ActionFixProducer,
	"bad_request":                         ActionFixProducer,
	"transient_exhausted":                 ActionRetryLater,
	"session_not_started":                 ActionWaitForUser,
	"session_not_complete":                ActionWaitForUser,
	"id_scan_not_complete":                ActionWaitForUser,
	// On a first attempt another account had the session before we ever
	// called; after a lost response the worker reconciles it as our own
	// (enrollment.succeeded, reconciled), so a dead letter with this code
	// is another account's in every case.
	"session_already_tied_to_an_account": ActionInvestigate,
	// Set by the ledger's Reconcile when asynq lost the task behind the
	// ledger's back (deleted, archived by hand): an operator's doing.
	"task_deleted":     ActionInvestigate,
	"archived_outside": ActionInvestigate,
}

// Action returns what the application should do about a dead letter with
// code: one of the Action constants, ActionInvestigate for a code it does
// not know (so a new code is looked at, never silently retried).
func Action(code string) string {
	if a, ok := actions[code]; ok {
		return a
	}
	return ActionInvestigate
}
