package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// Probe asks GET /readyz of the worker listening on listen (its
// Config.HTTPAddr; one listening on all interfaces is asked on loopback),
// for a container HEALTHCHECK. It returns the answer's text when it is a
// 200, and otherwise an error on one line: no answer (and the innermost
// reason), or the status and the answer's text.
func Probe(ctx context.Context, listen string) (string, error) {
	u := "http://" + probeAddr(listen) + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return "", fmt.Errorf("no answer from %s: %s", u, strings.Join(strings.Fields(err.Error()), " "))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	reason := strings.Join(strings.Fields(string(body)), " ")
	if resp.StatusCode != http.StatusOK {
		if reason == "" {
			reason = resp.Status
		}
		return "", fmt.Errorf("%s answered %d: %s", u, resp.StatusCode, reason)
	}
	return reason, nil
}

// probeAddr turns a listen address into one to dial: a worker listening on
// all interfaces (0.0.0.0:8080, [::]:8080, :8080) is asked on loopback.
func probeAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		// Go listens dual-stack on an unspecified address, so IPv4
		// loopback reaches it either way.
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
