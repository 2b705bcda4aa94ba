package policy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

type authorizeCase struct {
	method, path string
	granted      []string
	want         Result
}

func runAuthorize(t *testing.T, p *Policy, cases []authorizeCase) {
	t.Helper()
	for _, tc := range cases {
		got := p.Authorize(tc.method, tc.path, tc.granted)
		if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s %s %q (-want, +got):\n%s", tc.method, tc.path, tc.granted, diff)
		}
		if r := p.Match(tc.method, tc.path); r.Public() != tc.want.Public || r.Name() != tc.want.Rule {
			t.Errorf("%s %s: Match = %q public %v, want %q public %v", tc.method, tc.path, r.Name(), r.Public(), tc.want.Rule, tc.want.Public)
		}
	}
}

func mustLoad(t testing.TB, path string) *Policy {
	t.Helper()
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMatch(t *testing.T) {
	p := mustLoad(t, "testdata/match.yaml")
	read := []string{"scans:read"}
	runAuthorize(t, p, []authorizeCase{
		// Public routes: any method, no scope, trailing slash and query ignored.
		{"GET", "/healthz", nil, Result{Rule: "health", Public: true}},
		{"POST", "/healthz/", nil, Result{Rule: "health", Public: true}},
		{"GET", "/healthz?probe=1", nil, Result{Rule: "health", Public: true}},
		{"GET", "/", nil, Result{Rule: "root", Public: true}},
		// Patterns: {id} is one non-empty segment; methods are case-insensitive.
		{"GET", "/v1/scans/42/results", []string{"reports:read"}, Result{Rule: "result"}},
		{"get", "/v1/scans/42/results/", read, Result{Rule: "result"}},
		{"GET", "/v1/scans/42/results", nil, Result{Rule: "result", MissingAnyOf: []string{"scans:read", "reports:read"}}},
		{"HEAD", "/v1/scans/42", read, Result{Rule: "scan by id"}},
		// First match wins: "scan by id" shadows rule 5 for GET, not DELETE.
		{"GET", "/v1/scans/42", read, Result{Rule: "scan by id"}},
		{"DELETE", "/v1/scans/42", []string{"scans:write"}, Result{Rule: "rule 5", Missing: []string{"scans:delete"}}},
		// {rest...}: zero or more segments, any method (even an unknown one).
		{"GET", "/v1/scans/42/export", []string{"scans:read", "exports:write"}, Result{Rule: "export"}},
		{"PROPFIND", "/v1/scans/42/export/a/b", read, Result{Rule: "export", Missing: []string{"exports:write"}}},
		// Method mismatch falls through to the prefix rule.
		{"POST", "/v1/scans/42/results", []string{"scans:write"}, Result{Rule: "scans"}},
		// A prefix matches itself and below, at a segment boundary only.
		{"GET", "/v1/scans", nil, Result{Rule: "scans", Missing: []string{"scans:write"}}},
		{"GET", "/v1/scansecret", []string{"scans:write"}, Result{Rule: "default", Missing: []string{"admin"}}},
		// The file's default rule.
		{"GET", "/v1/other", []string{"admin"}, Result{Rule: "default"}},
		{"GET", "/v1/other", read, Result{Rule: "default", Missing: []string{"admin"}}},
		// A pattern segment never matches an empty one: the path is refused.
		{"GET", "/v1/scans//results", read, Result{Rule: "invalid path", Invalid: true}},
	})
}

func TestBuiltinDefault(t *testing.T) {
	p := Default()
	const d = "built-in default"
	runAuthorize(t, p, []authorizeCase{
		{"GET", "/v1/scans", []string{"scans:read"}, Result{Rule: d}},
		{"HEAD", "/v1/scans", []string{"scans:read"}, Result{Rule: d}},
		{"OPTIONS", "/v1/scans", []string{"scans:read"}, Result{Rule: d}},
		{"get", "/v1/scans", []string{"scans:read"}, Result{Rule: d}},
		{"POST", "/v1/scans", []string{"scans:read"}, Result{Rule: d, Missing: []string{"write"}}},
		{"POST", "/v1/scans", []string{"scans:write"}, Result{Rule: d}},
		{"GET", "/v1/scans", []string{"scans:write"}, Result{Rule: d}}, // write implies read
		{"DELETE", "/v1/scans/1", []string{"scans:*"}, Result{Rule: d}},
		{"PATCH", "/v1/scans/1", []string{"*"}, Result{Rule: d}},
		{"GET", "/v1/scans", nil, Result{Rule: d, Missing: []string{"read"}}},
		{"GET", "/v1/scans", []string{"admin"}, Result{Rule: d, Missing: []string{"read"}}},
		{"PROPFIND", "/v1/scans", []string{"scans:read"}, Result{Rule: d, Missing: []string{"write"}}},
		{"GET", "/v1/../admin", []string{"*"}, Result{Rule: "invalid path", Invalid: true}},
	})
	if p.Len() != 0 || p.Source() != "built-in" {
		t.Errorf("Default: Len %d, Source %q", p.Len(), p.Source())
	}
}

// TestNoDefaultSection: a file without default falls back to the built-in
// default for the requests its rules do not match.
func TestNoDefaultSection(t *testing.T) {
	p := mustLoad(t, "testdata/nodefault.yaml")
	runAuthorize(t, p, []authorizeCase{
		{"POST", "/v1/scans", []string{"scans:write"}, Result{Rule: "rule 2"}},
		{"POST", "/v1/scans", []string{"scans:read"}, Result{Rule: "rule 2", Missing: []string{"scans:write"}}},
		{"GET", "/v1/scans", []string{"scans:read"}, Result{Rule: "built-in default"}},
		{"PUT", "/v1/scans", []string{"scans:read"}, Result{Rule: "built-in default", Missing: []string{"write"}}},
		{"GET", "/healthz", nil, Result{Rule: "rule 1", Public: true}},
	})
}

func TestResult(t *testing.T) {
	for _, tc := range []struct {
		r           Result
		allowed     bool
		wantMessage string
	}{
		{Result{Rule: "x"}, true, ""},
		{Result{Rule: "x", Public: true}, true, ""},
		{Result{Rule: "invalid path", Invalid: true}, false, "Request path is not in canonical form"},
		{Result{Rule: "built-in default", Missing: []string{"write"}}, false,
			`Insufficient permissions: missing scope write (granted by write, <resource>:write, <resource>:* or *); rule "built-in default"`},
		{Result{Rule: "scans", Missing: []string{"scans:write"}}, false,
			`Insufficient permissions: missing scope scans:write (granted by scans:write, scans:* or *); rule "scans"`},
		{Result{Missing: []string{"a", "b:c:read"}}, false,
			"Insufficient permissions: missing scopes a (granted by a or *), b:c:read (granted by b:c:read, b:c:write, b:c:*, b:* or *)"},
		{Result{MissingAnyOf: []string{"a", "b"}}, false, "Insufficient permissions: needs one of the scopes a, b"},
		{Result{Rule: "rule 2", Missing: []string{"a"}, MissingAnyOf: []string{"b", "c"}}, false,
			`Insufficient permissions: missing scope a (granted by a or *); needs one of the scopes b, c; rule "rule 2"`},
	} {
		if got := tc.r.Allowed(); got != tc.allowed {
			t.Errorf("%+v: Allowed() = %v, want %v", tc.r, got, tc.allowed)
		}
		if diff := cmp.Diff(tc.wantMessage, tc.r.Message()); diff != "" {
			t.Errorf("%+v: Message() (-want, +got):\n%s", tc.r, diff)
		}
	}
}

// What a 403 says grants a scope does grant it, and the scopes it leaves
// out do not.
func TestGrantedByTextMatchesGrantedBy(t *testing.T) {
	for _, name := range []string{"read", "write", "scans:read", "scans:write", "admin", "a:b:c"} {
		q := newRequirement(name)
		text := grantedByText(name)
		listed := strings.Split(strings.TrimSuffix(text, " or *"), ", ")
		listed = append(listed, "*")
		for _, g := range listed {
			g = strings.ReplaceAll(g, "<resource>", "billing")
			if !q.grantedBy(g) {
				t.Errorf("%s: the message lists %q, which does not grant it", name, g)
			}
		}
		for _, g := range []string{"billing:delete", "other", "scans", "scans:admin", "x:*"} {
			_, verb, _ := strings.Cut(g, ":")
			if q.grantedBy(g) && !strings.Contains(text, g) && !strings.Contains(text, "<resource>:"+verb) {
				t.Errorf("%s: %q grants it but the message does not say so (%s)", name, g, text)
			}
		}
	}
}

// TestAllowedDoesNotAllocate is the hot-path promise: Match and Check for a
// caller that passes cost no allocation.
func TestAllowedDoesNotAllocate(t *testing.T) {
	example := mustLoad(t, "testdata/example.yaml")
	match := mustLoad(t, "testdata/match.yaml")
	for _, tc := range []struct {
		p            *Policy
		method, path string
		granted      []string
	}{
		{Default(), "GET", "/v1/scans?limit=10", []string{"billing:read", "scans:read"}},
		{Default(), "POST", "/v1/scans", []string{"scans:*"}},
		{example, "GET", "/v1/scans/42", []string{"scans:read"}},
		{example, "DELETE", "/v1/scans/42/", []string{"scans:write"}},
		{example, "get", "/healthz", nil},
		{match, "GET", "/v1/scans/42/results", []string{"reports:read"}},
		{match, "GET", "/v1/scans/42/export/a/b", []string{"exports:write", "scans:read"}},
	} {
		var res Result
		allocs := testing.AllocsPerRun(200, func() {
			res = tc.p.Match(tc.method, tc.path).Check(tc.granted)
		})
		if !res.Allowed() {
			t.Errorf("%s %s: not allowed: %+v", tc.method, tc.path, res)
		}
		if allocs != 0 {
			t.Errorf("%s %s: %v allocations, want 0", tc.method, tc.path, allocs)
		}
	}
}
