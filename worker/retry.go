package worker

import (
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hibiken/asynq"
)

// retryDelay is asynq's RetryDelayFunc. Counted retries back off
// exponentially with jitter between RetryBase and RetryMax; waits back off by
// their own count; a Retry-After is never cut short. The delay is rounded up
// to a whole second because asynq stores retry times in whole seconds,
// rounding down, which would otherwise run a task up to a second early.
func (w *Worker) retryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var d time.Duration
	var re *retryError
	switch {
	case errors.As(err, &re) && re.fixed:
		d = re.delay
	case errors.As(err, &re) && !re.counted:
		if re.notBefore > 0 {
			d = re.notBefore
		} else {
			d = backoffDelay(re.waitN, w.cfg.RetryBase, w.cfg.RetryMax)
		}
	default:
		d = backoffDelay(n, w.cfg.RetryBase, w.cfg.RetryMax)
		if re != nil && re.notBefore > d {
			d = re.notBefore
		}
	}
	return roundUpDelay(time.Now(), d)
}

// roundUpDelay returns a delay from now whose end falls on a whole second no
// earlier than now+d.
func roundUpDelay(now time.Time, d time.Duration) time.Duration {
	at := now.Add(d)
	if r := at.Truncate(time.Second); !r.Equal(at) {
		at = r.Add(time.Second)
	}
	return at.Sub(now)
}

// backoffDelay is the n-th (from 0) delay of an exponential backoff with
// jitter from base, doubling, capped at max.
func backoffDelay(n int, base, max time.Duration) time.Duration {
	b := newBackoff(base, max)
	d := b.NextBackOff()
	for i := 0; i < n && i < 64; i++ {
		d = b.NextBackOff()
	}
	return d
}

func newBackoff(base, max time.Duration) *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = base
	b.MaxInterval = max
	b.Multiplier = 2
	b.RandomizationFactor = 0.5
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// since is how long ago a fact the ledger timed began, at least: the
// ledger keeps whole seconds (floored), so the fact began within the second
// after t, and a window measured from it never ends early.
func since(t, now time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return max(now.Sub(t.Add(time.Second)), 0)
}
