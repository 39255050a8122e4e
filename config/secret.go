package config

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// redacted is what a non-empty Secret prints instead of its value.
const redacted = "[REDACTED]"

// Secret holds a credential such as the Verisoul API key.
//
// Every way of printing or encoding a Secret (fmt with any verb, slog,
// encoding/json, encoding.TextMarshaler) yields "[REDACTED]" when it is set and
// an empty string when it is not, so operators can tell "unset" from "set"
// without ever seeing the value. Reveal is the only way to get the value back,
// which makes every place that uses the real key easy to find.
//
// A Secret decodes from a kong flag or environment variable like any string.
type Secret string

// Reveal returns the secret value. Call it only where the value is sent to
// the service that needs it, never to build a message or a log line.
func (s Secret) Reveal() string { return string(s) }

// String returns "[REDACTED]", or "" when the secret is empty.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString returns the redacted form quoted like a Go string literal, so %#v
// of a struct holding a Secret shows APIKey:"[REDACTED]".
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// Format implements fmt.Formatter so that no verb can print the value: %q
// quotes the redacted form, %#v uses GoString, and every other verb (including
// %x and %d, which would otherwise dump the bytes) prints String, honouring
// width and the '-' flag.
func (s Secret) Format(f fmt.State, verb rune) { formatAs(f, verb, s.String(), s.GoString()) }

// formatAs prints str for any verb, quoted for %q and as gostr for %#v,
// honouring width and the '-' flag. Types holding secrets implement
// fmt.Formatter with it so that no verb falls through to fmt's reflection,
// which would print their raw fields.
func formatAs(f fmt.State, verb rune, str, gostr string) {
	switch {
	case verb == 'q':
		fmt.Fprintf(f, fmt.FormatString(f, 'q'), str)
	case verb == 'v' && f.Flag('#'):
		_, _ = io.WriteString(f, gostr)
	default:
		format := "%"
		if f.Flag('-') {
			format += "-"
		}
		if w, ok := f.Width(); ok {
			format += strconv.Itoa(w)
		}
		fmt.Fprintf(f, format+"s", str)
	}
}

// LogValue implements slog.LogValuer so log handlers print the redacted form.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON encodes the redacted form as a JSON string.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText returns the redacted form. It is deliberately not the inverse
// of UnmarshalText: encoding must never reveal the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText sets the secret to text unchanged. kong uses it to decode the
// flag or environment variable; it never fails, so a decoding error can never
// echo the value.
func (s *Secret) UnmarshalText(text []byte) error {
	*s = Secret(text)
	return nil
}
