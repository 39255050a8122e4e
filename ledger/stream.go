package ledger

import "github.com/redis/go-redis/v9"

// StreamKey is the key of shard's outcome stream, for consumers that follow
// the streams themselves (package outcomes, the webhook deliverer) rather
// than through Outcomes. A session's events are all in its shard's stream,
// so reading each shard in order keeps every session's events in order.
func (l *Ledger) StreamKey(shard int) string { return l.streamKey(shard) }

// ParseEvent turns an entry of shard's stream, as XREAD or XREADGROUP
// return it, into an Event, the way Outcomes does.
func ParseEvent(shard int, m redis.XMessage) Event { return eventOf(shard, m) }
