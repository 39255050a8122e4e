// Package webhooks delivers the outcome events of package outcomes to the
// application's HTTP endpoints, signed per the Standard Webhooks
// specification (webhook-id, webhook-timestamp, webhook-signature
// "v1,<base64 HMAC-SHA256 of id.timestamp.body>" with a whsec_ secret), so
// a receiver in any language verifies them with the spec's own libraries.
//
// A Deliverer runs beside the worker (or alone, `enrollq webhooks run`): it
// never calls Verisoul and shares nothing with the enrollment path but
// Redis, so a slow or dead receiver costs no rate budget and delays no
// enrollment.
//
// # Delivery
//
// Each endpoint has its own Redis consumer group ("webhooks:<name>") on
// each of the ledger's 16 outcome stream shards: its cursor. One process at
// a time delivers an endpoint's shard (a lease key, renewed while it
// works; a crashed process's lease runs out and another takes over), one
// event after another in stream order, so a session's events (always in
// one shard) arrive in order. The event is acknowledged (XACK) only after
// a 2xx answer: a process killed mid-delivery leaves it pending under the
// group's one consumer name, and whoever holds the lease next delivers it
// again first. So delivery is at least once; receivers deduplicate on the
// event id (the webhook-id header), which a redelivery keeps.
//
// Any answer but a 2xx is a failure, retried with exponential backoff
// (1s, doubling, at most 5 min) until the event is RetryFor old (default
// 72h); then it is kept in the endpoint's failed list
// (<prefix>webhooks:<name>:failed, never trimmed) for `enrollq webhooks
// replay`, and the shard moves on. 410 Gone disables the endpoint until
// `enrollq webhooks enable`; redirects are not followed (a 3xx is a
// failure); each call has its own timeout. A failing event holds back the
// rest of its shard (that is what keeps a session's order), so a receiver
// that rejects one event holds back about one sixteenth of the events
// until it accepts it or the retry window ends.
package webhooks
