package worker

// SetCrashHook installs a hook that runs at each point of the path
// ("admitted", "claimed", "called", "settled"), for crash tests: a panic
// there stands for the worker dying at that point.
func SetCrashHook(w *Worker, f func(point string)) { w.crashHook = f }
