package webhooks_test

import (
	"testing"

	"github.com/enrollq/enrollq/webhooks"
)

// TestPick: no name is every endpoint, a name is that one, and an unknown
// name is an error naming the configured ones.
func TestPick(t *testing.T) {
	t.Parallel()
	eps := []webhooks.Endpoint{{Name: "crm"}, {Name: "billing"}}
	if got, err := webhooks.Pick(eps, ""); err != nil || len(got) != 2 {
		t.Errorf("no name: %v, %v", got, err)
	}
	if got, err := webhooks.Pick(eps, "billing"); err != nil || len(got) != 1 || got[0].Name != "billing" {
		t.Errorf("billing: %v, %v", got, err)
	}
	if _, err := webhooks.Pick(eps, "ledger"); err == nil || err.Error() != `no endpoint "ledger"; configured: crm, billing` {
		t.Errorf("unknown name: %v", err)
	}
}
