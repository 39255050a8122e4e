package main_test

import (
	"strings"
	"testing"

	"github.com/enrollq/enrollq/internal/redistest"
)

// The binary reaches a Redis that speaks TLS and checks clients
// (tls-auth-clients yes) with the CA and client certificate settings, as
// variables or as flags, and warns once when skip_verify turns verification
// off.
func TestRedisTLSSettings(t *testing.T) {
	t.Parallel()
	srv := redistest.StartTLSServer(t)
	f := srv.Files
	url := "rediss://" + srv.TLSAddr + "/3"

	r := enrollq(t, []string{"REDIS_URL=" + url, "ENROLLQ_REDIS_CA_FILE=" + f.CAFile,
		"ENROLLQ_REDIS_CERT_FILE=" + f.ClientCertFile, "ENROLLQ_REDIS_KEY_FILE=" + f.ClientKeyFile}, "stats", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"signup"`) {
		t.Fatalf("stats over TLS from the variables: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stderr, "WARN") {
		t.Errorf("verified TLS warns: %s", r.stderr)
	}

	r = enrollq(t, nil, "--redis-url", url, "--redis-ca-file", f.CAFile, "--redis-cert-file", f.ClientCertFile, "--redis-key-file", f.ClientKeyFile, "stats", "--json")
	if r.code != 0 {
		t.Fatalf("stats over TLS from the flags: exit %d\nstderr %s", r.code, r.stderr)
	}

	// The wrong CA: the server is refused, and the error says why.
	r = enrollq(t, []string{"REDIS_URL=" + url + "?max_retries=-1", "ENROLLQ_REDIS_CA_FILE=" + f.OtherCAFile,
		"ENROLLQ_REDIS_CERT_FILE=" + f.ClientCertFile, "ENROLLQ_REDIS_KEY_FILE=" + f.ClientKeyFile}, "stats")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach Redis at rediss://") || !strings.Contains(r.stderr, "certificate signed by unknown authority") {
		t.Errorf("wrong CA: exit %d, stderr %s", r.code, r.stderr)
	}

	// skip_verify connects in spite of the wrong CA, with one WARN line.
	r = enrollq(t, []string{"REDIS_URL=" + url + "?skip_verify=true", "ENROLLQ_REDIS_CA_FILE=" + f.OtherCAFile,
		"ENROLLQ_REDIS_CERT_FILE=" + f.ClientCertFile, "ENROLLQ_REDIS_KEY_FILE=" + f.ClientKeyFile}, "stats", "--json")
	if r.code != 0 {
		t.Fatalf("stats with skip_verify: exit %d\nstderr %s", r.code, r.stderr)
	}
	warns := 0
	for _, line := range strings.Split(r.stderr, "\n") {
		if strings.Contains(line, "WARN") && strings.Contains(line, "skip_verify=true") && strings.Contains(line, "NOT verified") {
			warns++
		}
	}
	if warns != 1 {
		t.Errorf("skip_verify: %d WARN lines, want 1; stderr:\n%s", warns, r.stderr)
	}

	// A CA file with a plain URL is a usage error naming the setting.
	r = enrollq(t, []string{"REDIS_URL=redis://" + srv.Addr + "/3", "ENROLLQ_REDIS_CA_FILE=" + f.CAFile}, "stats")
	if r.code != 2 || !strings.Contains(r.stderr, "ENROLLQ_REDIS_CA_FILE (--redis-ca-file): is only meaningful with a TLS REDIS_URL") {
		t.Errorf("CA file with redis://: exit %d, stderr %s", r.code, r.stderr)
	}
}
