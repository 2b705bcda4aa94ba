package policy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestScopeGrantedBy(t *testing.T) {
	for _, tc := range []struct {
		required, granted string
		want              bool
	}{
		// Exact names.
		{"scans:read", "scans:read", true},
		{"scans:read", "scans:reader", false},
		{"admin", "admin", true},
		{"admin", "admins", false},
		// "*" grants everything.
		{"admin", "*", true},
		{"read", "*", true},
		// "<prefix>:*" grants every "<prefix>:<x>", at any depth, not <prefix>.
		{"scans:read", "scans:*", true},
		{"scans:write", "scans:*", true},
		{"scans:reports:read", "scans:*", true},
		{"scans", "scans:*", false},
		{"scansx:read", "scans:*", false},
		{"billing:read", "scans:*", false},
		{"scans:read", ":*", false},
		// A wildcard elsewhere is just a character.
		{"scans:read", "*:read", false},
		{"scans:read", "sc*", false},
		// Write implies read, for a resource and for the generic scopes.
		{"scans:read", "scans:write", true},
		{"read", "write", true},
		{"scans:write", "scans:read", false},
		{"write", "read", false},
		{"billing:read", "scans:write", false},
		// The default policy's read and write accept resource scopes.
		{"read", "read", true},
		{"read", "scans:read", true},
		{"read", "billing:write", true},
		{"read", "scans:*", true},
		{"read", "admin", false},
		{"read", ":read", false},
		{"write", "scans:write", true},
		{"write", "scans:*", true},
		{"write", "scans:read", false},
		{"write", "write", true},
		// A generic grant is not a wildcard over resources.
		{"scans:read", "read", false},
		{"scans:write", "write", false},
	} {
		q := newRequirement(tc.required)
		if got := q.grantedBy(tc.granted); got != tc.want {
			t.Errorf("required %q, granted %q: %v, want %v", tc.required, tc.granted, got, tc.want)
		}
	}
}

func TestCheckScopes(t *testing.T) {
	p, err := Parse([]byte(`
rules:
  - {name: all, path: /all, scopes: {all_of: [scans:read, reports:read, admin]}}
  - {name: any, path: /any, scopes: {any_of: [scans:read, reports:read]}}
  - {name: both, path: /both, scopes: {all_of: [admin], any_of: [scans:write, reports:write]}}
`), "inline")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path    string
		granted []string
		want    Result
	}{
		{"/all", []string{"scans:read", "reports:read", "admin"}, Result{Rule: "all"}},
		{"/all", []string{"*"}, Result{Rule: "all"}},
		{"/all", []string{"scans:write", "reports:*"}, Result{Rule: "all", Missing: []string{"admin"}}},
		{"/all", nil, Result{Rule: "all", Missing: []string{"scans:read", "reports:read", "admin"}}},
		{"/any", []string{"reports:read"}, Result{Rule: "any"}},
		{"/any", []string{"reports:write"}, Result{Rule: "any"}},
		{"/any", []string{"billing:read", "read"}, Result{Rule: "any", MissingAnyOf: []string{"scans:read", "reports:read"}}},
		{"/both", []string{"admin", "reports:*"}, Result{Rule: "both"}},
		{"/both", []string{"scans:write"}, Result{Rule: "both", Missing: []string{"admin"}}},
		{"/both", []string{"admin", "scans:read"}, Result{Rule: "both", MissingAnyOf: []string{"scans:write", "reports:write"}}},
	} {
		got := p.Authorize("GET", tc.path, tc.granted)
		if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s %q (-want, +got):\n%s", tc.path, tc.granted, diff)
		}
	}
	// The missing list is the caller's to keep: changing it changes nothing.
	r := p.Authorize("GET", "/any", nil)
	r.MissingAnyOf[0] = "tampered"
	if got := p.Authorize("GET", "/any", nil).MissingAnyOf[0]; got != "scans:read" {
		t.Errorf("MissingAnyOf shares the policy's slice: %q", got)
	}
}
