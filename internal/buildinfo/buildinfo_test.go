package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	t.Parallel()
	info := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/enrollq/enrollq", Version: "v1.2.3"}}
	if got, want := describe("v1.2.3-set", info, true), "enrollq v1.2.3-set revision unknown go1.26.0"; got != want {
		t.Errorf("without VCS: got %q, want %q", got, want)
	}
	info.Settings = []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "4675cc6e0c3bbd0000000000000000000000abcd"},
		{Key: "vcs.time", Value: "2026-12-01T08:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	if got, want := describe("v1.2.3-set", info, true), "enrollq v1.2.3-set revision 4675cc6e0c3bbd0000000000000000000000abcd (2026-12-01T08:00:00Z) modified go1.26.0"; got != want {
		t.Errorf("with VCS: got %q, want %q", got, want)
	}
	if got := describe("v1.2.3", nil, false); !strings.HasPrefix(got, "enrollq v1.2.3 (no build information) go") {
		t.Errorf("without build info: got %q", got)
	}
}
