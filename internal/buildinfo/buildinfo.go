// Package buildinfo holds the version and revision stamped into the binary
// at build time with -ldflags "-X ...". Without them it falls back to what
// the Go toolchain recorded (module version, VCS revision), so a plain
// `go build` or `go install` still reports something true.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Stamped at build time:
//
//	-ldflags "-X github.com/agentrelay/agentrelay/internal/buildinfo.version=v1.2.3
//	          -X github.com/agentrelay/agentrelay/internal/buildinfo.revision=abc123"
var (
	version  string
	revision string
)

// Info describes the running binary.
type Info struct {
	Version   string
	Revision  string
	GoVersion string
}

// Get returns the build information.
func Get() Info {
	i := Info{Version: version, Revision: revision, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		if i.Revision == "" {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					i.Revision = s.Value
				}
			}
		}
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	if i.Revision == "" {
		i.Revision = "unknown"
	}
	return i
}

// UserAgent is the User-Agent agentrelay sends to the API.
func (i Info) UserAgent() string {
	return "agentrelay/" + i.Version + " (+https://github.com/agentrelay/agentrelay)"
}
