package jwtauth

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

// TestClaimsMapping mints v1 and v2 tokens end to end and checks the
// Session they map to (times aside, see TestVerifyValid).
func TestClaimsMapping(t *testing.T) {
	e := newEnv(t, envOptions{})
	org := &devissuer.Org{ID: "org_1", Slug: "acme", Role: "admin", Permissions: []string{"org:scans:read", "org:scans:manage"}}
	tests := []struct {
		name    string
		mapping ClaimsMapping
		claims  devissuer.Claims
		want    Session
	}{{
		name:   "v2 without organisation",
		claims: devissuer.Claims{Subject: "user_1", SessionID: "sess_1"},
		want:   Session{Subject: "user_1", SessionID: "sess_1", Tier: "free"},
	}, {
		name:   "v2 organisation, per without fpm kept as given",
		claims: devissuer.Claims{Subject: "user_1", SessionID: "sess_1", AuthorizedParty: "https://app.example", Org: org},
		want: Session{
			Subject: "user_1", SessionID: "sess_1", AuthorizedParty: "https://app.example",
			OrgID: "org_1", OrgSlug: "acme", OrgRole: "org:admin",
			Permissions: []string{"org:scans:read", "org:scans:manage"}, Tier: "free",
		},
	}, {
		name: "v2 compact permissions expanded through fea and fpm",
		claims: devissuer.Claims{
			Subject: "user_1", SessionID: "sess_1",
			Org:   &devissuer.Org{ID: "org_1", Slug: "acme", Role: "member", Permissions: []string{"read", "manage"}, FeaturePermissionMap: "3,2"},
			Extra: map[string]any{"fea": "o:scans,u:profile,o:billing"},
		},
		want: Session{
			Subject: "user_1", SessionID: "sess_1", OrgID: "org_1", OrgSlug: "acme", OrgRole: "org:member",
			Permissions: []string{"org:scans:read", "org:scans:manage", "org:billing:read"}, Tier: "free",
		},
	}, {
		name:   "v1 organisation",
		claims: devissuer.Claims{Subject: "user_2", SessionID: "sess_2", Version: 1, Org: org},
		want: Session{
			Subject: "user_2", SessionID: "sess_2", OrgID: "org_1", OrgSlug: "acme", OrgRole: "org:admin",
			Permissions: []string{"org:scans:read", "org:scans:manage"}, Tier: "free",
		},
	}, {
		name:    "permissions claim as a space-separated string, added to the org ones",
		mapping: ClaimsMapping{PermissionsClaim: "scope"},
		claims: devissuer.Claims{Subject: "user_1", SessionID: "sess_1", Org: org,
			Extra: map[string]any{"scope": "scans:read  scans:write org:scans:read"}},
		want: Session{
			Subject: "user_1", SessionID: "sess_1", OrgID: "org_1", OrgSlug: "acme", OrgRole: "org:admin",
			Permissions: []string{"org:scans:read", "org:scans:manage", "scans:read", "scans:write"}, Tier: "free",
		},
	}, {
		name:    "permissions claim as an array; unusable entries dropped",
		mapping: ClaimsMapping{PermissionsClaim: "permissions"},
		claims: devissuer.Claims{Subject: "user_1", SessionID: "sess_1",
			Extra: map[string]any{"permissions": []string{"read", "write", "", "has space", "a,b", "bad\x01"}}},
		want: Session{Subject: "user_1", SessionID: "sess_1", Permissions: []string{"read", "write"}, Tier: "free"},
	}, {
		name:   "tier at the top level",
		claims: devissuer.Claims{Subject: "user_1", SessionID: "sess_1", Extra: map[string]any{"tier": "pro"}},
		want:   Session{Subject: "user_1", SessionID: "sess_1", Tier: "pro"},
	}, {
		name:    "tier in Clerk public metadata, custom claim name",
		mapping: ClaimsMapping{TierClaim: "plan"},
		claims: devissuer.Claims{Subject: "user_1", SessionID: "sess_1",
			Extra: map[string]any{"metadata": map[string]any{"plan": "enterprise"}}},
		want: Session{Subject: "user_1", SessionID: "sess_1", Tier: "enterprise"},
	}, {
		name:    "unusable tier gives the default",
		mapping: ClaimsMapping{DefaultTier: "basic"},
		claims:  devissuer.Claims{Subject: "user_1", SessionID: "sess_1", Extra: map[string]any{"tier": "pro\r\nx-odin-tier: enterprise"}},
		want:    Session{Subject: "user_1", SessionID: "sess_1", Tier: "basic"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.v.cfg
			cfg.Claims = tc.mapping
			v, err := New(t.Context(), cfg, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(t.Context(), e.mint(t, tc.claims))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if diff := cmp.Diff(&tc.want, got, cmpopts.IgnoreFields(Session{}, "IssuedAt", "NotBefore", "Expiry", "SigningKey", "Factors")); diff != "" {
				t.Errorf("session (-want, +got):\n%s", diff)
			}
		})
	}
}

func TestClerkOrgPermissions(t *testing.T) {
	tests := []struct {
		name, per, fpm, fea string
		want                []string
	}{
		{"empty", "", "", "", nil},
		{"no fpm: as given", "read, manage ,", "", "", []string{"read", "manage"}},
		{"expanded", "read,manage", "3,2", "o:scans,o:billing", []string{"org:scans:read", "org:scans:manage", "org:billing:read"}},
		{"user features skipped", "read,manage", "1", "u:profile,o:scans", []string{"org:scans:manage"}},
		{"fewer masks than features", "read", "1", "o:a,o:b", []string{"org:a:read"}},
		{"mask wider than per grants nothing", "read,manage", "4,1", "o:a,o:b", []string{"org:b:manage"}},
		{"mask not a number", "read", "x,1", "o:a,o:b", []string{"org:b:read"}},
		{"fpm without org features", "read", "1", "", nil},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, clerkOrgPermissions(tc.per, tc.fpm, tc.fea)); diff != "" {
			t.Errorf("%s (-want, +got):\n%s", tc.name, diff)
		}
	}
}

// TestSessionFromPayload checks payloads that a signer could produce but no
// honest one would, past the signature check.
func TestSessionFromPayload(t *testing.T) {
	v := &Verifier{cfg: Config{Issuer: "https://iss", Leeway: time.Second, Claims: ClaimsMapping{TierClaim: "tier", DefaultTier: "free"}}}
	now := time.Unix(1_700_000_000, 0)
	seg := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tests := map[string]struct {
		payload string
		want    string
	}{
		"not JSON":                {`{"iss":`, ReasonMalformed},
		"array":                   {`[]`, ReasonMalformed},
		"null":                    {`null`, ReasonMalformed},
		"valid":                   {`{"iss":"https://iss","sub":"u","exp":1700000060}`, ReasonOK},
		"fractional exp":          {`{"iss":"https://iss","sub":"u","exp":1700000000.5}`, ReasonOK},
		"exp at now":              {`{"iss":"https://iss","sub":"u","exp":1699999999}`, ReasonExpired},
		"exp negative":            {`{"iss":"https://iss","sub":"u","exp":-1}`, ReasonBadClaims},
		"exp huge":                {`{"iss":"https://iss","sub":"u","exp":1e300}`, ReasonBadClaims},
		"exp null":                {`{"iss":"https://iss","sub":"u","exp":null}`, ReasonExpired},
		"iss not a string":        {`{"iss":1,"sub":"u","exp":1700000060}`, ReasonBadClaims},
		"ISS is not iss":          {`{"ISS":"https://iss","sub":"u","exp":1700000060}`, ReasonBadIssuer},
		"sub not a string":        {`{"iss":"https://iss","sub":{},"exp":1700000060}`, ReasonBadClaims},
		"o not an object":         {`{"iss":"https://iss","sub":"u","exp":1700000060,"v":2,"o":"org"}`, ReasonBadClaims},
		"o.per not a string":      {`{"iss":"https://iss","sub":"u","exp":1700000060,"v":2,"o":{"per":["a"]}}`, ReasonBadClaims},
		"org_permissions object":  {`{"iss":"https://iss","sub":"u","exp":1700000060,"org_permissions":{"a":1}}`, ReasonBadClaims},
		"metadata not an object":  {`{"iss":"https://iss","sub":"u","exp":1700000060,"metadata":"x"}`, ReasonOK},
		"act of an impersonation": {`{"iss":"https://iss","sub":"u","exp":1700000060,"act":{"sub":"user_admin","iss":"https://dashboard.clerk.com","sid":"sess_a"}}`, ReasonOK},
		"act null":                {`{"iss":"https://iss","sub":"u","exp":1700000060,"act":null}`, ReasonOK},
		"act not an object":       {`{"iss":"https://iss","sub":"u","exp":1700000060,"act":"user_admin"}`, ReasonBadClaims},
		"act without sub":         {`{"iss":"https://iss","sub":"u","exp":1700000060,"act":{"iss":"https://dashboard.clerk.com"}}`, ReasonBadClaims},
		"act.sub not a string":    {`{"iss":"https://iss","sub":"u","exp":1700000060,"act":{"sub":7}}`, ReasonBadClaims},
	}
	want, got := map[string]string{}, map[string]string{}
	for name, tc := range tests {
		want[name] = tc.want
		_, err := v.sessionFromPayload(seg(tc.payload), now)
		got[name] = Reason(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reasons (-want, +got):\n%s", diff)
	}
	s, err := v.sessionFromPayload(seg(tests["act of an impersonation"].payload), now)
	if err != nil || s.Actor != "user_admin" || s.Subject != "u" {
		t.Errorf("impersonation: %+v, %v; want actor user_admin acting as u", s, err)
	}
}
