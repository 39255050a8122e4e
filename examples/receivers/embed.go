// Package receivers holds the README's webhook receiver examples, in Node,
// Python and Go, as the files the tests run (internal/receivertest).
package receivers

import _ "embed"

// Node is receiver.mjs (npm's standardwebhooks).
//
//go:embed receiver.mjs
var Node []byte

// Python is receiver.py (the standard library only).
//
//go:embed receiver.py
var Python []byte

// Go is goreceiver/main.go (the spec's Go library).
//
//go:embed goreceiver/main.go
var Go []byte

// GoPackage is the import path of the Go receiver, to build it.
const GoPackage = "github.com/enrollq/enrollq/examples/receivers/goreceiver"
