package runs

import (
	"crypto/rand"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// idAlphabet spells run ids: lower-case letters and digits without the
// look-alikes 0/o and 1/l, so an id read aloud or copied by hand survives.
const idAlphabet = "abcdefghijkmnpqrstuvwxyz23456789"

// NewID returns a fresh run id: 10 characters (50 random bits), short
// enough that a record carrying it stays small.
func NewID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b[:])
}

// CheckName checks a run's human label (--run-name): at most 100 bytes of
// printable UTF-8.
func CheckName(name string) error {
	if len(name) > 100 {
		return fmt.Errorf("--run-name: at most 100 bytes, got %d", len(name))
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("--run-name: not valid UTF-8")
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("--run-name %q: control characters are not allowed", name)
		}
	}
	return nil
}
