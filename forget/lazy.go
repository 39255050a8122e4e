package forget

import (
	"context"
	"sync"
)

// Lazy is a Forgetter made on the first call that needs it, by calling
// make, and made again after make failed (Redis down, say): for a server
// that must start, and answer that it cannot forget yet, while Redis is
// unreachable. New reads (or makes) the erasure key in Redis, so it cannot
// be made before.
type Lazy struct {
	mu   sync.Mutex
	f    *Forgetter
	make func() (*Forgetter, error)
}

// NewLazy returns a Lazy that makes its Forgetter with make.
func NewLazy(make func() (*Forgetter, error)) *Lazy { return &Lazy{make: make} }

// Forget is Forgetter.Forget, after making the Forgetter if need be; a
// failure to make it is the error.
func (l *Lazy) Forget(ctx context.Context, accountID string, o Options) (Result, error) {
	l.mu.Lock()
	if l.f == nil {
		f, err := l.make()
		if err != nil {
			l.mu.Unlock()
			return Result{}, err
		}
		l.f = f
	}
	f := l.f
	l.mu.Unlock()
	return f.Forget(ctx, accountID, o)
}
