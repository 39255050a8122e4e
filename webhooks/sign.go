package webhooks

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Signer signs webhook bodies with one or more secrets. Two secrets (during
// a rotation) give two signatures, space-separated in one header, as the
// specification says; a receiver accepts the message when any one
// matches.
type Signer struct {
	hooks []*standardwebhooks.Webhook
}

// NewSigner returns a Signer for secrets, each "whsec_" followed by the
// base64 of the key (the form the spec's libraries take).
func NewSigner(secrets []string) (*Signer, error) {
	if len(secrets) == 0 {
		return nil, fmt.Errorf("webhooks: no secret")
	}
	s := &Signer{}
	for i, sec := range secrets {
		if err := CheckSecret(sec); err != nil {
			return nil, fmt.Errorf("webhooks: secret %d: %w", i+1, err)
		}
		h, err := standardwebhooks.NewWebhook(sec)
		if err != nil {
			return nil, fmt.Errorf("webhooks: secret %d: not valid base64 after whsec_", i+1)
		}
		s.hooks = append(s.hooks, h)
	}
	return s, nil
}

// CheckSecret reports what is wrong with a secret, never showing it.
func CheckSecret(secret string) error {
	rest, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return fmt.Errorf("must start with whsec_")
	}
	if _, err := standardwebhooks.NewWebhook(secret); err != nil || len(rest) < 24 {
		return fmt.Errorf("must be whsec_ followed by the base64 of at least 18 random bytes (e.g. whsec_$(openssl rand -base64 32))")
	}
	return nil
}

// Headers returns the Standard Webhooks headers of one attempt to send body
// as message id at time at.
func (s *Signer) Headers(id string, at time.Time, body []byte) (http.Header, error) {
	sigs := make([]string, 0, len(s.hooks))
	for _, h := range s.hooks {
		sig, err := h.Sign(id, at, body)
		if err != nil {
			return nil, err
		}
		sigs = append(sigs, sig)
	}
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
	h.Set("webhook-signature", strings.Join(sigs, " "))
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "enrollq-webhooks")
	return h, nil
}
