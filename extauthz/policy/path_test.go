package policy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCanonicalPath(t *testing.T) {
	for _, tc := range []struct {
		raw, want, reason string
	}{
		{"/", "/", ""},
		{"/v1/scans", "/v1/scans", ""},
		{"/v1/scans/", "/v1/scans", ""},
		{"/v1/scans?", "/v1/scans", ""},
		{"/v1/scans?next=/v1/admin/../x#y", "/v1/scans", ""},
		{"/?x", "/", ""},
		{"/v1/%61dmin", "/v1/admin", ""},
		{"/v1/scans/a%20b", "/v1/scans/a b", ""},
		{"/v1/caf%C3%A9", "/v1/café", ""},
		{"/v1/a..b/.c/c.", "/v1/a..b/.c/c.", ""},
		{"/v1/{id}", "/v1/{id}", ""},
		{"", "", reasonNotAbsolute},
		{"*", "", reasonNotAbsolute},
		{"?/v1", "", reasonNotAbsolute},
		{"v1/scans", "", reasonNotAbsolute},
		{"http://host/v1/admin", "", reasonNotAbsolute},
		{"//v1/admin", "", reasonEmptySegment},
		{"/v1//admin", "", reasonEmptySegment},
		{"/v1/admin//", "", reasonEmptySegment},
		{"/.", "", reasonDotSegment},
		{"/v1/./admin", "", reasonDotSegment},
		{"/v1/public/../admin", "", reasonDotSegment},
		{"/v1/admin/..", "", reasonDotSegment},
		{"/v1/%2e%2e/admin", "", reasonEncodedDelim},
		{"/v1/.%2E/admin", "", reasonEncodedDelim},
		{"/v1/admin%2F..", "", reasonEncodedDelim},
		{"/v1/admin%2f", "", reasonEncodedDelim},
		{"/v1/admin%5C..", "", reasonEncodedDelim},
		{"/v1/admin%3B", "", reasonEncodedDelim},
		{"/v1/admin%252F..", "", reasonEncodedDelim},
		{"/v1/public/..;/admin", "", reasonSemicolon},
		{"/v1/admin;jsessionid=x", "", reasonSemicolon},
		{`/v1/public\..\admin`, "", reasonBackslash},
		{"/v1/admin#frag", "", reasonFragment},
		{"/v1/ad min", "", reasonRawByte},
		{"/v1/admin\x00", "", reasonRawByte},
		{"/v1/admin\t", "", reasonRawByte},
		{"/v1/admin\x7f", "", reasonRawByte},
		{"/v1/caf\xc3\xa9", "", reasonRawByte},
		{"/v1/admin%00", "", reasonEncodedCtl},
		{"/v1/admin%0a", "", reasonEncodedCtl},
		{"/v1/admin%7F", "", reasonEncodedCtl},
		{"/v1/admin%", "", reasonBadEscape},
		{"/v1/admin%4", "", reasonBadEscape},
		{"/v1/admin%zz", "", reasonBadEscape},
		{"/v1/admin%u002e", "", reasonBadEscape},
		{"/v1/admin%C0%AE", "", reasonInvalidUTF8}, // overlong "."
		{"/v1/admin%FF", "", reasonInvalidUTF8},
	} {
		got, reason := canonicalPath(tc.raw)
		if got != tc.want || reason != tc.reason {
			t.Errorf("canonicalPath(%q) = %q, %q; want %q, %q", tc.raw, got, reason, tc.want, tc.reason)
		}
	}
}

// TestPathAttacks sends the example policy requests built to reach /v1/admin
// without the admin scope. None may pass; the rule each lands on is listed
// so that a change in treatment shows up.
func TestPathAttacks(t *testing.T) {
	p := mustLoad(t, "testdata/example.yaml")
	granted := []string{"scans:read", "scans:write"}
	for _, tc := range []struct {
		method, path string
		rule         string
		allowed      bool
	}{
		// Controls: what the key may do.
		{"GET", "/v1/scans/42", "scans read", true},
		{"POST", "/v1/scans", "scans write", true},
		{"GET", "/v1/admin/users", "admin", false},
		// Dot segments, raw and encoded, and the Servlet ";" variant.
		{"GET", "/v1/scans/../admin", "invalid path", false},
		{"GET", "/v1/scans/./../admin/users", "invalid path", false},
		{"GET", "/healthz/../v1/admin", "invalid path", false},
		{"GET", "/v1/scans/%2e%2e/admin", "invalid path", false},
		{"GET", "/v1/scans/..;/admin", "invalid path", false},
		{"GET", "/healthz;/../v1/admin", "invalid path", false},
		// Encoded and doubled separators.
		{"GET", "/v1/admin%2F..", "invalid path", false},
		{"GET", "/v1/scans%2F..%2Fadmin", "invalid path", false},
		{"GET", "/v1/scans/%252e%252e/admin", "invalid path", false},
		{"GET", `/v1/scans\..\admin`, "invalid path", false},
		{"GET", "//v1/admin", "invalid path", false},
		{"GET", "/v1//admin", "invalid path", false},
		// Encoded letters are decoded: the admin rule still applies.
		{"GET", "/v1/%61dmin", "admin", false},
		{"GET", "/v1/admin/", "admin", false},
		{"GET", "/v1/admin?x=1", "admin", false},
		// Case: paths are case-sensitive; the strict default catches spellings
		// the rules do not list.
		{"GET", "/V1/ADMIN", "default", false},
		{"GET", "/v1/Admin", "default", false},
		{"GET", "/V1/SCANS", "default", false},
		{"gEt", "/v1/scans", "scans read", true},
		// A query string or fragment holding a path changes nothing.
		{"GET", "/v1/scans?path=/v1/admin", "scans read", true},
		{"GET", "/v1/scans?/../admin", "scans read", true},
		{"GET", "/healthz?/../v1/admin", "health", true},
		{"GET", "/healthz#/../v1/admin", "invalid path", false},
		// Prefixes match at segment boundaries.
		{"GET", "/v1/scansadmin", "default", false},
		{"GET", "/v1/adminx", "default", false},
		// NUL, controls, overlong UTF-8 and absolute forms.
		{"GET", "/v1/admin%00.json", "invalid path", false},
		{"GET", "/healthz\x00/v1/admin", "invalid path", false},
		{"GET", "/v1/scans/%C0%AE%C0%AE/admin", "invalid path", false},
		{"GET", "http://api/v1/admin", "invalid path", false},
		{"GET", "", "invalid path", false},
	} {
		got := p.Authorize(tc.method, tc.path, granted)
		if diff := cmp.Diff(tc.rule, got.Rule); diff != "" || got.Allowed() != tc.allowed {
			t.Errorf("%s %q: rule (-want, +got): %s; allowed %v, want %v", tc.method, tc.path, diff, got.Allowed(), tc.allowed)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		match   []string
		nomatch []string
	}{
		{"/v1/scans/{id}", []string{"/v1/scans/1", "/v1/scans/abc/"}, []string{"/v1/scans", "/v1/scans/1/x", "/v1/scan/1", "/"}},
		{"/v1/scans/{id}/results", []string{"/v1/scans/1/results"}, []string{"/v1/scans/results", "/v1/scans/1/results/2", "/v1/scans/1/result"}},
		{"/{a}/{b}", []string{"/x/y"}, []string{"/x", "/x/y/z", "/"}},
		{"/v1/files/{path...}", []string{"/v1/files", "/v1/files/a", "/v1/files/a/b/c"}, []string{"/v1/file", "/v1/filesx", "/v1"}},
		{"/{all...}", []string{"/", "/a", "/a/b"}, nil},
		{"/", []string{"/"}, []string{"/a"}},
	} {
		m, reason := compilePath(matchPattern, tc.pattern)
		if reason != "" {
			t.Fatalf("%s: %s", tc.pattern, reason)
		}
		for _, raw := range tc.match {
			if p, _ := canonicalPath(raw); !m.match(p) {
				t.Errorf("%s does not match %s", tc.pattern, raw)
			}
		}
		for _, raw := range tc.nomatch {
			if p, _ := canonicalPath(raw); m.match(p) {
				t.Errorf("%s matches %s", tc.pattern, raw)
			}
		}
	}
}
