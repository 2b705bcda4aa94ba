// Package buildinfo says which build of odin is running: the module
// version, the VCS revision and time it was built from, and the Go version,
// as the go command stamped them into the binary (go build stamps VCS
// information by default inside a git checkout; -buildvcs=false turns it
// off).
//
// A build without the git metadata (the Docker build: .git is not in its
// context) passes the revision and time instead with
//
//	-ldflags "-X github.com/odin-scan/odin-authz/internal/buildinfo.revision=<sha> -X github.com/odin-scan/odin-authz/internal/buildinfo.revisionTime=<RFC 3339>"
//
// (and buildinfo.revisionModified=true for a work tree with uncommitted
// changes), which Read uses only when the go command stamped no
// vcs.revision: it does not in a git worktree, whose .git is a file.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// revision and revisionTime are set with -ldflags -X by builds that cannot
// stamp VCS information (see the package comment).
var revision, revisionTime, revisionModified string

// Info is what the binary knows of its own build. Empty fields were not
// stamped (go run, or a build outside a VCS checkout).
type Info struct {
	// Module is the main module's path.
	Module string `json:"module"`
	// Version is the module version ("v1.2.3") when built with go install
	// module@version, else "(devel)".
	Version string `json:"version"`
	// Revision is the VCS commit, Time its commit time (RFC 3339).
	Revision string `json:"vcs_revision,omitempty"`
	Time     string `json:"vcs_time,omitempty"`
	// Modified is true when the work tree had uncommitted changes.
	Modified bool `json:"vcs_modified,omitempty"`
	// GoVersion is the toolchain that built the binary.
	GoVersion string `json:"go_version"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

// Read returns the running binary's build information.
func Read() Info {
	in := Info{Version: "(devel)", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return in.withLinkerRevision()
	}
	in.Module = bi.Main.Path
	if bi.Main.Version != "" {
		in.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in.withLinkerRevision()
}

// withLinkerRevision fills the revision and time from the -X variables when
// the go command stamped none.
func (in Info) withLinkerRevision() Info {
	if in.Revision == "" && revision != "" {
		in.Revision, in.Time, in.Modified = revision, revisionTime, revisionModified == "true"
	}
	return in
}

// Short is one word for a trace resource or a metric label: the module
// version, else the first 12 characters of the revision (with "-dirty" for
// a modified tree), else "devel".
func (in Info) Short() string {
	if in.Version != "" && in.Version != "(devel)" {
		return in.Version
	}
	if len(in.Revision) >= 12 {
		if in.Modified {
			return in.Revision[:12] + "-dirty"
		}
		return in.Revision[:12]
	}
	return "devel"
}

// String is the multi-line text of `odin version`.
func (in Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "odin %s\n", in.Short())
	fmt.Fprintf(&b, "module    %s %s\n", orUnknown(in.Module), in.Version)
	rev := orUnknown(in.Revision)
	if in.Modified {
		rev += " (modified work tree)"
	}
	fmt.Fprintf(&b, "revision  %s\n", rev)
	fmt.Fprintf(&b, "time      %s\n", orUnknown(in.Time))
	fmt.Fprintf(&b, "go        %s %s\n", in.GoVersion, in.Platform)
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown (not stamped: built with go run or -buildvcs=false, or outside a git checkout)"
	}
	return s
}
