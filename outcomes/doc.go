// Package outcomes is the public form of the ledger's outcome stream: the
// events the application sees (enrollment.succeeded, enrollment.failed,
// enrollment.requeued), one function that maps a ledger.Event to one, the
// JSON Schema they follow (events.schema.json, also embedded as Schema),
// and Consume, a Go consumer of the stream's shards on Redis consumer
// groups for services that react in-process, without an HTTP hop.
//
// Webhooks (package webhooks) send exactly these events, so a Go consumer
// and an HTTP receiver see the same ids, types and fields.
package outcomes
