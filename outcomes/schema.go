package outcomes

import _ "embed"

// Schema is events.schema.json, the JSON Schema (draft 2020-12) of an
// Event's JSON, for tools that validate or generate receivers.
//
//go:embed events.schema.json
var Schema []byte
