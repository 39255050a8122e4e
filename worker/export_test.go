package worker

// SetAfterDeadLetterRecord installs a hook that runs between recording a
// dead letter and returning it to asynq, for crash tests.
func SetAfterDeadLetterRecord(w *Worker, f func()) { w.afterDeadLetterRecord = f }
