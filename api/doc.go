// Package api is enrollq's HTTP API for producers in any language
// (`enrollq serve`): it enqueues enrollments through the enqueue package,
// one or a batch, and reads their status from the ledger, behind bearer
// tokens with scopes, a body limit, a per-token rate cap and the server
// timeouts that keep a slow client from holding a connection.
//
// openapi.yaml, kept beside this file and served at GET /v1/openapi.yaml, is
// the contract; the package's tests check every answer they get against it
// with kin-openapi's validator, so the two cannot drift apart.
//
// Errors are RFC 9457 problem documents whose type (urn:enrollq:problem:…)
// is stable; answer is the one function that turns an enqueue outcome into a
// status and a body, for single and batch requests alike.
package api

import _ "embed"

// Spec is the OpenAPI 3.1 document of the API (api/openapi.yaml).
//
//go:embed openapi.yaml
var Spec []byte
