package worker_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/enrollq/enrollq/worker"
)

// TestProbe: Probe returns /readyz's text on a 200, says the status and
// text otherwise, says there was no answer when nothing listens, and asks
// a worker listening on all interfaces on loopback.
func TestProbe(t *testing.T) {
	t.Parallel()
	var notReady atomic.Bool
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		if notReady.Load() {
			http.Error(w, "not ready:\n  the API rejects the key", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	addr := ln.Addr().String()
	port := addr[strings.LastIndex(addr, ":"):]
	ctx := context.Background()

	for _, listen := range []string{addr, "0.0.0.0" + port, port} {
		if got, err := worker.Probe(ctx, listen); err != nil || got != "ok" {
			t.Errorf("ready, listen %s: %q, %v; want ok", listen, got, err)
		}
	}
	notReady.Store(true)
	_, err = worker.Probe(ctx, addr)
	if want := "http://" + addr + "/readyz answered 503: not ready: the API rejects the key"; err == nil || err.Error() != want {
		t.Errorf("not ready: %v, want %q", err, want)
	}
	srv.Close()
	if _, err = worker.Probe(ctx, addr); err == nil || !strings.HasPrefix(err.Error(), "no answer from http://"+addr+"/readyz: ") || strings.Contains(err.Error(), "\n") {
		t.Errorf("nothing listening: %v", err)
	}
}
