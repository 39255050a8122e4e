package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/enrollq/enrollq/worker"
)

// healthcheckCmd asks the worker's own /readyz, so that a distroless image
// (no shell, no curl) can have a container HEALTHCHECK: the binary is the
// probe.
type healthcheckCmd struct {
	Timeout time.Duration `name:"timeout" default:"3s" help:"Give up on /readyz after this long."`
}

// Run exits 0 when GET /readyz on ENROLLQ_HTTP_ADDR answers 200, and 1 with
// a one-line reason otherwise.
func (c *healthcheckCmd) Run(e *env) error {
	if e.cfg.HTTPAddr == "" {
		return &exitError{code: exitFailure, err: errors.New("not ready: ENROLLQ_HTTP_ADDR is empty, so the worker serves no /readyz to ask")}
	}
	if c.Timeout <= 0 {
		return usageErr("--timeout: must be positive, got %s", c.Timeout)
	}
	ctx, cancel := context.WithTimeout(e.ctx, c.Timeout)
	defer cancel()
	reason, err := worker.Probe(ctx, e.cfg.HTTPAddr)
	if err != nil {
		return &exitError{code: exitFailure, err: fmt.Errorf("not ready: %w", err)}
	}
	fmt.Fprintf(e.stdout, "ready: %s\n", reason)
	return nil
}
