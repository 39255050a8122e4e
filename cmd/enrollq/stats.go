package main

import (
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/worker"
)

type statsCmd struct {
	JSON bool `help:"Print JSON instead of tables."`
}

// Run prints queue sizes and the shared rate budget.
func (c statsCmd) Run(e *env) error {
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	// The workers' prefix: no command sets worker.Config.KeyPrefix.
	st, err := worker.ReadStats(e.ctx, rdb, ledger.DefaultPrefix, worker.StatsQueues(asynq.NewInspectorFromRedisClient(rdb)))
	if err != nil {
		return fmt.Errorf("reading stats from Redis at %s: %w", e.cfg.RedactedRedisURL(), err)
	}
	return e.print(c.JSON, st, st.WriteText)
}
