package webhooks

import "context"

// CreateCursors creates every endpoint's cursor (a consumer group on each
// shard, at the newest event) now, as Run does first. A worker calls it
// before it takes its first task, so that an endpoint configured on it
// gets every outcome it produces from then on, even on the endpoint's
// first run (Run, started on its own goroutine, could create the cursors
// after the first events).
func (d *Deliverer) CreateCursors(ctx context.Context) error {
	for _, ep := range d.opts.Endpoints {
		if err := d.st.ensureGroups(ctx, ep.Name); err != nil {
			return err
		}
	}
	return nil
}
