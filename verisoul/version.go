package verisoul

import "runtime/debug"

// modulePath is enrollq's module, whose version the User-Agent names.
const modulePath = "github.com/enrollq/enrollq"

// Version is the enrollq version named in the User-Agent header and by
// `enrollq --version`. A build may set it:
//
//	go build -ldflags "-X github.com/enrollq/enrollq/verisoul.Version=v1.2.3" ./cmd/enrollq
//
// (the Dockerfile does, from its VERSION build argument). Left empty, as by
// a plain `go build` or `go install`, BuildVersion takes the version the Go
// toolchain recorded in the binary.
var Version string

// BuildVersion returns Version when the build set it, else enrollq's module
// version from the binary's build information: the tag for
// `go install github.com/enrollq/enrollq/cmd/enrollq@v1.2.3` (also when
// another module imports this package), a pseudo-version for a build in a
// git checkout, "(devel)" when the toolchain knows none, "unknown" without
// build information.
func BuildVersion() string {
	if Version != "" {
		return Version
	}
	info, ok := debug.ReadBuildInfo()
	return moduleVersion(info, ok)
}

// moduleVersion is enrollq's module version in info (see BuildVersion).
func moduleVersion(info *debug.BuildInfo, ok bool) string {
	if !ok {
		return "unknown"
	}
	if info.Main.Path == modulePath && info.Main.Version != "" {
		return info.Main.Version
	}
	for _, d := range info.Deps {
		if d.Path == modulePath {
			if d.Replace != nil && d.Replace.Version != "" {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return "(devel)"
}
