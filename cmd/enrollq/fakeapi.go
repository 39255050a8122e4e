package main

import (
	"slices"
	"time"

	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// fakeAPICmd serves the fake Face Match API of verisoultest on its own
// (verisoultest.Serve), so that the worker, backfill and the dashboard can
// be tried by hand without a Verisoul key. What the fake answers is chosen
// by the account id's prefix (verisoultest.Prefixes).
type fakeAPICmd struct {
	Addr    string        `name:"addr" default:"127.0.0.1:8091" help:"host:port to serve the fake API on."`
	Latency time.Duration `name:"latency" default:"30ms" help:"Added to every answer."`
	Rate    int           `name:"rate" default:"0" help:"The API's own rate limit: at most this many calls of one key (every endpoint together) in any minute, each key in its own window, the others answered 429 with Retry-After (0: no limit)."`
	Key     []string      `name:"key" default:"fake-api-key-not-a-secret" help:"An API key the fake accepts, repeatable: the first is the default project's, each other one a project's (they are printed: use no real key here)."`
}

// Run serves the fake until SIGINT/SIGTERM.
func (c *fakeAPICmd) Run(e *env) error {
	switch {
	case c.Rate < 0:
		return usageErr("--rate: must be 0 (no limit) or a number of calls a minute, got %d", c.Rate)
	case c.Latency < 0:
		return usageErr("--latency: must not be negative, got %s", c.Latency)
	case len(c.Key) == 0 || slices.Contains(c.Key, ""):
		return usageErr("--key: must not be empty")
	case len(slices.Compact(slices.Sorted(slices.Values(c.Key)))) != len(c.Key):
		return usageErr("--key: a key is given twice (each project has a key of its own)")
	}
	return verisoultest.Serve(e.ctx, verisoultest.ServeOptions{Addr: c.Addr, Latency: c.Latency, Rate: c.Rate, Keys: c.Key, Out: e.stdout, Logger: e.log})
}
