package main

import (
	"log/slog"
	"time"

	"github.com/enrollq/enrollq/internal/demo"
	"github.com/enrollq/enrollq/internal/logging"
)

type demoCmd struct {
	Keep    bool          `help:"Keep Redis, the fake API and the worker running after the table, until Ctrl-C."`
	Timeout time.Duration `default:"60s" help:"Give up when the tasks have not all ended by then."`
	Verbose bool          `help:"Log to the terminal too; without it, on a terminal the worker's log goes to a file so the table stands alone."`
}

// Run runs the demo (package demo) and fails unless every task ended as
// scripted.
//
// On a terminal the worker's forty-odd lines would scroll the table away
// and wrap across it, so without --verbose they go to a temporary file,
// named in the output; elsewhere (CI, a pipe) and with --verbose they go to
// stderr like every command's.
func (c demoCmd) Run(e *env) error {
	o := demo.Options{Out: e.stdout, Log: e.log, Keep: c.Keep, HTTPAddr: e.cfg.HTTPAddr, Timeout: c.Timeout}
	if !c.Verbose && e.stderrTTY {
		log, path, closeLog, err := logging.TempFile(e.cfg.LogLevel, e.cfg.LogFormat, "enrollq-demo-*.log")
		if err != nil {
			// No file: keep the terminal readable with warnings only.
			e.log.Warn("demo: cannot create a log file; logging warnings only", "err", err)
			log, path, closeLog = logging.New("warn", e.cfg.LogFormat, e.stderr, true), "", func() {}
		}
		defer closeLog()
		logging.RouteRedis(log, slog.LevelWarn)
		o.Log, o.LogFile = log, path
	}
	return demo.Run(e.ctx, o)
}
