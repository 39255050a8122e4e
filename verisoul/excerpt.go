package verisoul

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// Redacted replaces a secret, or what looks like one, in a body excerpt.
const Redacted = "[REDACTED]"

// minSecretPiece is the shortest cut-off piece of the key that is redacted
// at the end of a text: a shorter one says too little about the key to be
// worth hiding, and would hide ordinary words that share its first letters.
const minSecretPiece = 6

// apiKeyHeader finds a header-like mention of the key's header in a body
// (an echoed request header line "x-api-key: …", a JSON dump
// "X-Api-Key": ["…"], a query-like x_api_key=…), up to where its value
// starts. Whatever the value holds is redacted, not only this client's key:
// an echo may show a key the client no longer has, or one cut or changed by
// the page.
var apiKeyHeader = regexp.MustCompile(`(?i)x[-_]api[-_]key["']?\s*[:=]\s*`)

// excerpt is the one place a body excerpt is made, for APIError.Body: at
// most MaxBodyExcerpt bytes, cut at a rune boundary, with invalid UTF-8
// replaced, so it is safe to log, and without the secret (the client's API
// key; "" for none). Redaction comes first and the cut after it, so a key
// that straddles the cut is seen whole and redacted; a piece of the key
// left at the end of the text (a body cut by the read bound or a dropped
// connection, or the cut itself) is redacted too.
func excerpt(raw []byte, secret string) string {
	s := redactBody(string(raw), secret)
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > MaxBodyExcerpt {
		cut := MaxBodyExcerpt
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = redactTail(s[:cut], secret) + "…"
	}
	return strings.TrimSpace(s)
}

// redactBody removes every whole occurrence of secret, the value of every
// header-like x-api-key mention, and a piece of secret at the very end of s.
func redactBody(s, secret string) string {
	if secret != "" {
		s = strings.ReplaceAll(s, secret, Redacted)
	}
	s = redactHeaderValues(s)
	return redactTail(s, secret)
}

// redactHeaderValues replaces the value after each x-api-key mention: up to
// the closing quote when it is quoted, else up to the end of the line (or
// an HTML tag).
func redactHeaderValues(s string) string {
	var b strings.Builder
	last := 0
	for _, m := range apiKeyHeader.FindAllStringIndex(s, -1) {
		start := m[1]
		if start < last || strings.HasPrefix(s[start:], Redacted) {
			continue
		}
		if start < len(s) && s[start] == '[' { // a JSON array of values
			start++
			for start < len(s) && s[start] == ' ' {
				start++
			}
		}
		end := start
		if end < len(s) && (s[end] == '"' || s[end] == '\'') {
			q := s[end]
			start++
			end = start
			for end < len(s) && s[end] != q && s[end] != '\n' && s[end] != '\r' {
				end++
			}
		} else {
			for end < len(s) && s[end] != '\n' && s[end] != '\r' && s[end] != '<' {
				end++
			}
		}
		if end == start || s[start:end] == Redacted {
			continue
		}
		b.WriteString(s[last:start])
		b.WriteString(Redacted)
		last = end
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// redactTail replaces a prefix of secret, at least minSecretPiece bytes
// long, that ends s: the key cut off by whatever ended the text.
func redactTail(s, secret string) string {
	for n := min(len(secret)-1, len(s)); n >= minSecretPiece; n-- {
		if strings.HasSuffix(s, secret[:n]) {
			return s[:len(s)-n] + Redacted
		}
	}
	return s
}
