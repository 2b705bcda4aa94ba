package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/jwtauth"
)

// TestParseErrors parses every file under testdata/invalid. Each file's
// first line is "# want: <the exact error>", so a fixture shows the line
// numbers its error names.
func TestParseErrors(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("first line %q is not # want: <error>", first)
			}
			p, err := Parse(data, filepath.Base(file))
			if err == nil {
				t.Fatalf("Parse succeeded with %d rules, want error %q", p.Len(), want)
			}
			if diff := cmp.Diff(want, err.Error()); diff != "" {
				t.Errorf("error (-want, +got):\n%s", diff)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	p, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range p.rules {
		names = append(names, r.Name())
	}
	want := []string{"health", "scans read", "scans write", "admin"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("rule names (-want, +got):\n%s", diff)
	}
	if p.Source() != "testdata/example.yaml" || p.Len() != 4 || p.def == nil {
		t.Errorf("Source %q, Len %d, default %v", p.Source(), p.Len(), p.def)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, maxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "absent.yaml"), "read policy: open " + filepath.Join(dir, "absent.yaml") + ": no such file or directory"},
		{big, "read policy " + big + ": larger than 1048576 bytes"},
	} {
		_, err := Load(tc.path)
		if err == nil {
			t.Fatalf("Load(%s) succeeded", tc.path)
		}
		if diff := cmp.Diff(tc.want, err.Error()); diff != "" {
			t.Errorf("Load(%s) error (-want, +got):\n%s", tc.path, diff)
		}
	}
}

// TestParseAccepts covers forms that are valid though unusual.
func TestParseAccepts(t *testing.T) {
	for name, src := range map[string]string{
		"rules only, empty":  "rules: []",
		"default only":       "default: {public: true}",
		"anchors":            "x: &s {all_of: [scans:read]}\nrules: [{path: /a, scopes: *s}]",
		"lowercase methods":  "rules: [{methods: [get, Post], path: /a, scopes: {all_of: [read]}}]",
		"public false":       "rules: [{path: /a, public: false, scopes: {any_of: [read]}}]",
		"trailing slash":     "rules: [{prefix: /v1/scans/, scopes: {all_of: [read]}}]",
		"percent in a rule":  "rules: [{path: /v1/%61dmin, scopes: {all_of: [admin]}}]",
		"root pattern":       "rules: [{pattern: /, public: true}, {pattern: '/{rest...}', scopes: {all_of: [read]}}]",
		"both scope lists":   "rules: [{path: /a, scopes: {all_of: [a], any_of: [b, c]}}]",
		"trailing separator": "rules: []\n---\n",
	} {
		if name == "anchors" {
			// Anchors are ordinary YAML, but "x" is not a policy field.
			src = "rules: [{path: /b, scopes: &s {all_of: [scans:read]}}, {path: /a, scopes: *s}]"
		}
		if _, err := Parse([]byte(src), name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestParseReverify compiles the reverify option in its forms: a mapping
// (with and without allow_api_keys), one of Clerk's presets, on the default.
func TestParseReverify(t *testing.T) {
	src := `
rules:
  - name: billing
    prefix: /v1/billing
    scopes: {all_of: [billing:write]}
    reverify: {level: second_factor, max_age: 10m}
  - name: exports
    prefix: /v1/exports
    scopes: {all_of: [exports:read]}
    reverify: {level: multi_factor, max_age: 1h, allow_api_keys: true}
  - name: danger
    prefix: /v1/danger
    scopes: {all_of: [admin]}
    reverify: strict_mfa
  - name: plain
    prefix: /v1/scans
    scopes: {all_of: [scans:read]}
default:
  scopes: {all_of: [admin]}
  reverify: {level: first_factor, max_age: 1440m}
`
	p, err := Parse([]byte(src), "reverify.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*Reverify{}
	for _, path := range []string{"/v1/billing/x", "/v1/exports", "/v1/danger", "/v1/scans", "/other"} {
		r := p.Match("POST", path)
		got[r.Name()] = r.Reverify()
	}
	want := map[string]*Reverify{
		"billing": {Reverification: jwtauth.Reverification{Level: jwtauth.SecondFactor, MaxAge: 10 * time.Minute}},
		"exports": {Reverification: jwtauth.Reverification{Level: jwtauth.MultiFactor, MaxAge: time.Hour}, AllowAPIKeys: true},
		"danger":  {Reverification: jwtauth.Reverification{Level: jwtauth.MultiFactor, MaxAge: 10 * time.Minute}},
		"plain":   nil,
		"default": {Reverification: jwtauth.Reverification{Level: jwtauth.FirstFactor, MaxAge: 24 * time.Hour}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Reverify by rule (-want, +got):\n%s", diff)
	}
	if Default().Match("GET", "/x").Reverify() != nil {
		t.Error("the built-in default asks for reverification")
	}
}
