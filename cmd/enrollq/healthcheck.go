package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
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
	u := "http://" + probeAddr(e.cfg.HTTPAddr) + "/readyz"
	ctx, cancel := context.WithTimeout(e.ctx, c.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return &exitError{code: exitFailure, err: fmt.Errorf("not ready: %w", err)}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return &exitError{code: exitFailure, err: fmt.Errorf("not ready: no answer from %s: %s", u, oneLine(errors.Unwrap(err), err))}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	reason := strings.Join(strings.Fields(string(body)), " ")
	if resp.StatusCode != http.StatusOK {
		if reason == "" {
			reason = resp.Status
		}
		return &exitError{code: exitFailure, err: fmt.Errorf("not ready: %s answered %d: %s", u, resp.StatusCode, reason)}
	}
	fmt.Fprintf(e.stdout, "ready: %s\n", reason)
	return nil
}

// probeAddr turns a listen address into one to dial: a worker listening on
// all interfaces (0.0.0.0:8080, [::]:8080, :8080) is asked on loopback.
func probeAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		// Go listens dual-stack on an unspecified address, so IPv4
		// loopback reaches it either way.
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// oneLine is the innermost useful text of a client error, on one line.
func oneLine(inner, outer error) string {
	err := outer
	if inner != nil {
		err = inner
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}
