// Command goreceiver is a webhook receiver for enrollq: it verifies each
// delivery with the Standard Webhooks Go library, answers 2xx only to
// verified ones, and deduplicates on the event id.
//
//	WEBHOOK_SECRET=whsec_... PORT=8000 go run ./examples/receivers/goreceiver
package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/enrollq/enrollq/outcomes" // or your own struct of the schema
)

func main() {
	wh, err := standardwebhooks.NewWebhook(os.Getenv("WEBHOOK_SECRET"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "WEBHOOK_SECRET:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	seen := map[string]bool{} // use your database in production
	out := json.NewEncoder(os.Stdout)
	http.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "unreadable body", http.StatusBadRequest)
			return
		}
		// Over the raw body, before parsing: the signature (any of several,
		// during a rotation) and a webhook-timestamp within 5 minutes.
		if err := wh.Verify(body, r.Header); err != nil {
			http.Error(w, "rejected: "+err.Error(), http.StatusBadRequest)
			return
		}
		var ev outcomes.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !seen[ev.ID] {
			seen[ev.ID] = true
			switch ev.Type {
			case outcomes.TypeSucceeded: // mark ev.Data.AccountID enrolled
			case outcomes.TypeFailed:
				if ev.Data.Action == outcomes.ActionNewSessionNeeded {
					// ask the user to redo Face Match
				}
			}
			_ = out.Encode(ev) // one line per new event
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:"+cmp.Or(os.Getenv("PORT"), "8000"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "listening on %d\n", ln.Addr().(*net.TCPAddr).Port)
	_ = http.Serve(ln, nil)
}
