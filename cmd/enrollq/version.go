package main

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// version describes this binary for --version: the module version (a tag
// for `go install …@v1.2.3`, "(devel)" for a local build), the VCS revision
// and time it was built from, whether the tree had uncommitted changes, and
// the Go version. All of it comes from the build information the Go
// toolchain embeds, so it needs no -ldflags.
func version() string { return versionOf(debug.ReadBuildInfo()) }

// versionOf formats info as version describes; ok is false when the binary
// carries no build information.
func versionOf(info *debug.BuildInfo, ok bool) string {
	if !ok {
		return "enrollq (no build information) " + runtime.Version()
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
	b.WriteString("enrollq " + info.Main.Version)
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
