package worker

// envCrashHook is the crash hook a test build of the binary installs from
// ENROLLQ_TEST_CRASHPOINT (crashpoint_on.go, build tag
// enrollq_crashpoints); nil in every other build, where the path's crash
// points cost a nil check.
var envCrashHook func(point string)

// CrashPoints are the points of the path, in order, at which a test may
// crash the worker: admitted (nothing claimed), claimed (not called),
// called (the API answered, nothing settled), settled (the ledger settled,
// asynq not answered).
var CrashPoints = []string{pointAdmitted, pointClaimed, pointCalled, pointSettled}
