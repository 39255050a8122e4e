// Package chaos holds enrollq's fault-injection suite: real enrollq
// processes, private redis-server processes and the fake Verisoul API, with
// crashes, restarts and a misbehaving API. It runs only when asked:
//
//	go test ./chaos -chaos -v              # the CI-sized variants (a few minutes)
//	go test ./chaos -chaos -long -v        # the long variants of the issue
//
// Every test talks only to loopback and stops what it starts.
package chaos
