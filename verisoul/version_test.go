package verisoul_test

import (
	"context"
	"runtime/debug"
	"testing"

	"github.com/enrollq/enrollq/verisoul"
)

// A version set at build time (-ldflags -X …verisoul.Version=…) is the one
// the User-Agent names. Not parallel: it sets the package variable, and the
// parallel tests run only after it has put it back.
func TestUserAgentNamesTheBuildVersion(t *testing.T) {
	old := verisoul.Version
	verisoul.Version = "v9.8.7-test"
	t.Cleanup(func() { verisoul.Version = old })
	f := newFakeAPI(t, documented200())
	c := newClient(t, f.URL())
	if _, err := c.Enroll(context.Background(), testSessionID, testAccountID); err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if got, want := f.Requests()[0].Header.Get("User-Agent"), "enrollq/v9.8.7-test (+https://github.com/enrollq/enrollq)"; got != want {
		t.Errorf("User-Agent = %q, want %q", got, want)
	}
}

// Without one, the version is enrollq's module version as the toolchain
// recorded it: the main module's, or the dependency's when another module
// builds enrollq's client in.
func TestModuleVersion(t *testing.T) {
	t.Parallel()
	dep := func(m debug.Module) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Path: "example.com/app", Version: "v0.1.0"}, Deps: []*debug.Module{&m}}
	}
	for _, c := range []struct {
		name string
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{"go install @tag", &debug.BuildInfo{Main: debug.Module{Path: "github.com/enrollq/enrollq", Version: "v1.2.3"}}, true, "v1.2.3"},
		{"git checkout", &debug.BuildInfo{Main: debug.Module{Path: "github.com/enrollq/enrollq", Version: "v0.0.0-20261201114500-b55545c0abcd"}}, true, "v0.0.0-20261201114500-b55545c0abcd"},
		{"a dependency", dep(debug.Module{Path: "github.com/enrollq/enrollq", Version: "v1.4.0"}), true, "v1.4.0"},
		{"a replaced dependency", dep(debug.Module{Path: "github.com/enrollq/enrollq", Version: "v1.4.0", Replace: &debug.Module{Path: "example.com/fork", Version: "v1.4.1"}}), true, "v1.4.1"},
		{"not known", &debug.BuildInfo{Main: debug.Module{Path: "example.com/app"}}, true, "(devel)"},
		{"no build information", nil, false, "unknown"},
	} {
		if got := verisoul.ModuleVersion(c.info, c.ok); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
