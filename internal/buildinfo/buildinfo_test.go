package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestShort(t *testing.T) {
	for _, tc := range []struct {
		in   Info
		want string
	}{
		{Info{Version: "v1.4.0", Revision: "0123456789abcdef"}, "v1.4.0"},
		{Info{Version: "(devel)", Revision: "0123456789abcdef"}, "0123456789ab"},
		{Info{Version: "(devel)", Revision: "0123456789abcdef", Modified: true}, "0123456789ab-dirty"},
		{Info{Version: "(devel)"}, "devel"},
	} {
		if got := tc.in.Short(); got != tc.want {
			t.Errorf("%+v.Short() = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestReadAndString(t *testing.T) {
	in := Read()
	if in.GoVersion != runtime.Version() || in.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("Read() = %+v", in)
	}
	s := Info{Module: "github.com/odin-scan/odin-authz", Version: "(devel)", Revision: "abc", GoVersion: "go1.26.10", Platform: "linux/amd64"}.String()
	for _, want := range []string{"odin devel\n", "module    github.com/odin-scan/odin-authz (devel)\n", "revision  abc\n", "time      unknown", "go        go1.26.10 linux/amd64\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() lacks %q:\n%s", want, s)
		}
	}
}

func TestLinkerRevisionFallback(t *testing.T) {
	revision, revisionTime, revisionModified = "fedcba9876543210", "2026-01-02T03:04:05Z", "true"
	t.Cleanup(func() { revision, revisionTime, revisionModified = "", "", "" })
	got := Info{}.withLinkerRevision()
	if got.Revision != "fedcba9876543210" || got.Time != "2026-01-02T03:04:05Z" || !got.Modified {
		t.Errorf("no VCS stamp: withLinkerRevision() = %+v, want the -X revision and time", got)
	}
	stamped := Info{Revision: "0123456789abcdef", Time: "2025-01-01T00:00:00Z"}.withLinkerRevision()
	if stamped.Revision != "0123456789abcdef" || stamped.Time != "2025-01-01T00:00:00Z" {
		t.Errorf("VCS stamp present: withLinkerRevision() = %+v, want the stamp kept", stamped)
	}
}
