package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"slices"
	"strings"
)

// Scope is what a token may do.
type Scope string

// The scopes. A token configured without a scope list has the first three;
// forget, which erases an account's biometric enrollment for good, must be
// named.
const (
	ScopeEnqueue Scope = "enqueue" // POST /v1/enrollments, /v1/enrollments/batch
	ScopeRead    Scope = "read"    // GET /v1/enrollments…
	ScopeBudget  Scope = "budget"  // POST /v1/budget/lease, /v1/budget/report
	ScopeForget  Scope = "forget"  // DELETE /v1/accounts/{account_id}
)

// defaultScopes are a token's without a scope list; knownScopes every one.
var (
	defaultScopes = []Scope{ScopeEnqueue, ScopeRead, ScopeBudget}
	knownScopes   = []Scope{ScopeEnqueue, ScopeRead, ScopeBudget, ScopeForget}
)

// Token is one configured bearer token. Only its SHA-256 is kept, and it is
// named in logs by its position ("token 2"), never by its value.
type Token struct {
	Name   string
	hash   [32]byte
	scopes []Scope
}

// Has reports whether the token has scope s.
func (t Token) Has(s Scope) bool { return slices.Contains(t.scopes, s) }

// Scopes returns the token's scopes.
func (t Token) Scopes() []Scope { return slices.Clone(t.scopes) }

// ParseTokens reads ENROLLQ_API_TOKENS: entries separated by commas,
// spaces or newlines (a tokens file holds one a line), each
// SECRET or SECRET:SCOPE[+SCOPE…] with scopes enqueue, read, budget and
// forget; an entry without scopes has enqueue, read and budget. Errors name the entry by its
// position, never by its secret. An empty s is no tokens (and no error).
func ParseTokens(s string) ([]Token, error) {
	entries := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
	out := make([]Token, 0, len(entries))
	seen := map[[32]byte]bool{}
	for i, e := range entries {
		name := fmt.Sprintf("token %d", i+1)
		secret, scopeList, hasScopes := strings.Cut(e, ":")
		if len(secret) < 16 {
			return nil, fmt.Errorf("%s: must be at least 16 characters (use a random value, e.g. openssl rand -hex 32)", name)
		}
		t := Token{Name: name, hash: sha256.Sum256([]byte(secret))}
		if seen[t.hash] {
			return nil, fmt.Errorf("%s: the same secret as an earlier token", name)
		}
		seen[t.hash] = true
		if !hasScopes {
			t.scopes = slices.Clone(defaultScopes)
		} else {
			for sc := range strings.SplitSeq(scopeList, "+") {
				if !slices.Contains(knownScopes, Scope(sc)) {
					return nil, fmt.Errorf("%s: unknown scope %q (scopes are enqueue, read, budget and forget, joined with +)", name, sc)
				}
				if !slices.Contains(t.scopes, Scope(sc)) {
					t.scopes = append(t.scopes, Scope(sc))
				}
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// lookup finds the token whose secret is presented, comparing with every
// configured token in constant time (the hashes have one length, and the
// loop does not stop at a match), so timing tells nothing of the secrets.
func lookup(tokens []Token, presented string) (int, bool) {
	h := sha256.Sum256([]byte(presented))
	found := -1
	for i := range tokens {
		if subtle.ConstantTimeCompare(h[:], tokens[i].hash[:]) == 1 {
			found = i
		}
	}
	return found, found >= 0
}
