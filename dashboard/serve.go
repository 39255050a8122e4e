package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// CheckAuth refuses a basic-auth user without a password or the reverse,
// naming the variables that set them.
func CheckAuth(user, password string) error {
	if (user == "") != (password == "") {
		return errors.New("ENROLLQ_DASHBOARD_USER and ENROLLQ_DASHBOARD_PASSWORD: set both for basic auth, or neither")
	}
	return nil
}

// Serve serves h (New's handler) under RootPath on ln, with / redirecting
// there, until ctx ends; then it stops, letting requests in flight finish
// for up to 5 seconds. It returns nil after a clean stop.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	mux := http.NewServeMux()
	mux.Handle(RootPath+"/", h)
	mux.Handle("GET /{$}", http.RedirectHandler(RootPath+"/", http.StatusFound))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("dashboard: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("dashboard: stopping: %w", err)
	}
	return nil
}
