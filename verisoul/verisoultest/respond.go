package verisoultest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

// echoPage is a proxy's error page that lists the request's headers, with
// x-api-key last and padding before it so that its value starts at byte
// keyAt when the head is shorter than that.
func echoPage(r *http.Request, status, keyAt int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "<html><head><title>%d %s</title></head><body><h1>%d %s</h1>\n<p>The upstream server did not answer. Your request:</p><pre>\n",
		status, http.StatusText(status), status, http.StatusText(status))
	fmt.Fprintf(&b, "%s %s %s\nhost: %s\n", r.Method, r.URL.RequestURI(), r.Proto, r.Host)
	names := make([]string, 0, len(r.Header))
	for k := range r.Header {
		if !strings.EqualFold(k, "x-api-key") {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		for _, v := range r.Header[k] {
			fmt.Fprintf(&b, "%s: %s\n", strings.ToLower(k), v)
		}
	}
	const pad, key = "x-padding: ", "x-api-key: "
	if n := keyAt - b.Len() - len(pad) - 1 - len(key); n >= 0 {
		b.WriteString(pad + strings.Repeat(".", n) + "\n")
	}
	for _, v := range r.Header.Values("x-api-key") {
		b.WriteString(key + v + "\n")
	}
	b.WriteString("</pre>\n<p>" + strings.Repeat("If the problem persists, contact the site's administrator. ", 12) + "</p></body></html>\n")
	return b.Bytes()
}

// sleep waits d unless the client goes away first; it reports whether the
// client is still there.
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func writeJSON(w http.ResponseWriter, status int, h http.Header, v any) {
	for k, vs := range h {
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// hangUp closes the connection without writing a response.
func hangUp(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("verisoultest: response writer cannot hijack")
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		_ = conn.Close()
	}
}
