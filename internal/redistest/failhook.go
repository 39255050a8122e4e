package redistest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// ErrInjected is the error of a command FailHook fails.
var ErrInjected = errors.New("injected: connection reset by peer")

// FailHook is a go-redis hook (rdb.AddHook) that fails, unsent, every
// command Fails picks, alone or inside a pipeline (the rest of the
// pipeline is sent): Redis failing some commands and not others, as in the
// middle of a batch. Failed counts them; Piped counts the commands seen in
// pipelines of more than one.
type FailHook struct {
	Fails         func(redis.Cmder) bool
	Failed, Piped atomic.Int64
}

func (h *FailHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *FailHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, c redis.Cmder) error {
		if h.Fails(c) {
			h.Failed.Add(1)
			c.SetErr(ErrInjected)
			return ErrInjected
		}
		return next(ctx, c)
	}
}

func (h *FailHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 1 {
			h.Piped.Add(int64(len(cmds)))
		}
		var sent []redis.Cmder
		for _, c := range cmds {
			if h.Fails(c) {
				h.Failed.Add(1)
				c.SetErr(ErrInjected)
				continue
			}
			sent = append(sent, c)
		}
		if len(sent) > 0 {
			if err := next(ctx, sent); err != nil {
				return err
			}
		}
		if len(sent) < len(cmds) {
			return ErrInjected
		}
		return nil
	}
}

// ScriptFor reports whether c runs a script (EVAL, EVALSHA) whose first
// key starts with keyPrefix and whose arguments hold s (as a whole
// argument, or within one, as in an encoded task).
func ScriptFor(c redis.Cmder, keyPrefix, s string) bool {
	args := c.Args()
	if n := c.Name(); (n != "evalsha" && n != "eval") || len(args) < 4 {
		return false
	}
	if key, _ := args[3].(string); !strings.HasPrefix(key, keyPrefix) {
		return false
	}
	for _, a := range args[4:] {
		switch v := a.(type) {
		case string:
			if contains([]byte(v), s) {
				return true
			}
		case []byte:
			if contains(v, s) {
				return true
			}
		}
	}
	return false
}

func contains(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }
