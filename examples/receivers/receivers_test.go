package receivers_test

import (
	"os"
	"strings"
	"testing"

	"github.com/enrollq/enrollq/examples/receivers"
)

// TestREADMEReceiversAreTheTestedOnes: the README's receiver examples are
// these files, word for word, which the tests run as the receivers of real
// deliveries (internal/receivertest).
func TestREADMEReceiversAreTheTestedOnes(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		fence, file string
		src         []byte
	}{
		{"js", "receiver.mjs", receivers.Node},
		{"python", "receiver.py", receivers.Python},
		{"go", "goreceiver/main.go", receivers.Go},
	} {
		if !strings.Contains(string(readme), "```"+c.fence+"\n"+string(c.src)+"```\n") {
			t.Errorf("the README's %s receiver differs from examples/receivers/%s", c.fence, c.file)
		}
	}
}
