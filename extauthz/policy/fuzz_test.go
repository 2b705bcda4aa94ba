package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds Parse arbitrary files, seeded with every fixture: it must
// return a policy or an error, never panic, and a policy it returns must
// answer requests.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	more, _ := filepath.Glob("testdata/invalid/*.yaml")
	for _, file := range append(files, more...) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a: &a [*a]\nrules: *a"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		for _, path := range []string{"/", "/v1/scans/1", "/healthz", "/a/b/c/d"} {
			res := p.Authorize("GET", path, []string{"scans:read"})
			if res.Rule == "" {
				t.Errorf("%s: no rule named", path)
			}
		}
	})
}

// FuzzCanonicalPath checks what an accepted path may look like: absolute,
// no empty, "." or ".." segment, no trailing slash, no query.
func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/", "/v1/scans/", "/v1/%61dmin?x=/../", "//a", "/a/%2e%2e/b", "/a;b", "/%C0%AE", "/a/../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, reason := canonicalPath(raw)
		if reason != "" {
			return
		}
		if p == "/" {
			return
		}
		if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
			t.Fatalf("%q -> %q: not absolute or trailing slash", raw, p)
		}
		for _, seg := range strings.Split(p[1:], "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("%q -> %q: segment %q", raw, p, seg)
			}
		}
		// Encoded separators are refused, so decoding keeps every segment
		// boundary; only a trailing slash goes.
		rawPath, _, _ := strings.Cut(raw, "?")
		if strings.Count(p, "/") != strings.Count(strings.TrimSuffix(rawPath, "/"), "/") {
			t.Fatalf("%q -> %q: segments added or lost", raw, p)
		}
	})
}
