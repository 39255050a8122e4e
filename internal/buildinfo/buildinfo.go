// Package buildinfo says what a binary was built from, for --version.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/enrollq/enrollq/verisoul"
)

// Describe describes this binary for --version: its version, the one the
// API client's User-Agent names (verisoul.BuildVersion: what the build set
// with -ldflags, else the module version, a tag for `go install …@v1.2.3`,
// a pseudo-version or "(devel)" for a local build), the VCS revision and
// time it was built from, whether the tree had uncommitted changes, and the
// Go version, from the build information the Go toolchain embeds.
func Describe() string {
	info, ok := debug.ReadBuildInfo()
	return describe(verisoul.BuildVersion(), info, ok)
}

// describe formats ver and info as Describe says; ok is false when the
// binary carries no build information.
func describe(ver string, info *debug.BuildInfo, ok bool) string {
	if !ok {
		return "enrollq " + ver + " (no build information) " + runtime.Version()
	}
	var rev, at string
	modified := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	var b strings.Builder
	b.WriteString("enrollq " + ver)
	if rev == "" {
		b.WriteString(" revision unknown")
	} else {
		b.WriteString(" revision " + rev)
		if at != "" {
			b.WriteString(" (" + at + ")")
		}
		if modified {
			b.WriteString(" modified")
		}
	}
	b.WriteString(" " + info.GoVersion)
	return b.String()
}
