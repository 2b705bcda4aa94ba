package jwtauth

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestPayloadStrictJSON checks what the lean claims decoder does with
// payloads an issuer could sign but no honest one would: duplicate and
// case-variant names, numbers in every JSON form, and claims of the wrong
// shape.
func TestPayloadStrictJSON(t *testing.T) {
	v := &Verifier{cfg: Config{Issuer: "https://iss", Leeway: time.Second,
		Claims: ClaimsMapping{TierClaim: "tier", DefaultTier: "free", PermissionsClaim: "permissions"}}}
	now := time.Unix(1_700_000_000, 0)
	seg := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	const base = `"iss":"https://iss","sub":"u","exp":1700000060`
	tests := map[string]struct {
		payload string
		want    string
	}{
		"duplicate exp":                  {`{` + base + `,"exp":9999999999}`, ReasonMalformed},
		"duplicate sub":                  {`{` + base + `,"sub":"admin"}`, ReasonMalformed},
		"duplicate unknown claim":        {`{` + base + `,"x":1,"x":2}`, ReasonMalformed},
		"duplicate inside act":           {`{` + base + `,"act":{"sub":"a","sub":"b"}}`, ReasonMalformed},
		"duplicate inside o":             {`{` + base + `,"v":2,"o":{"id":"org_1","id":"org_2"}}`, ReasonMalformed},
		"duplicate through an escape":    {`{` + base + `,"\u0065xp":9999999999}`, ReasonMalformed},
		"EXP is not exp":                 {`{"iss":"https://iss","sub":"u","EXP":1700000060}`, ReasonExpired},
		"Sub is not sub":                 {`{"iss":"https://iss","Sub":"u","exp":1700000060}`, ReasonBadClaims},
		"escaped name is the name":       {`{"iss":"https://iss","s\u0075b":"u","exp":1700000060}`, ReasonOK},
		"exp in exponent form":           {`{"iss":"https://iss","sub":"u","exp":1.70000006e9}`, ReasonOK},
		"exp in exponent form, past":     {`{"iss":"https://iss","sub":"u","exp":1.6e9}`, ReasonExpired},
		"exp beyond float64":             {`{"iss":"https://iss","sub":"u","exp":1e400}`, ReasonBadClaims},
		"exp a 400-digit integer":        {`{"iss":"https://iss","sub":"u","exp":1` + strings.Repeat("0", 400) + `}`, ReasonBadClaims},
		"exp negative zero":              {`{"iss":"https://iss","sub":"u","exp":-0}`, ReasonExpired},
		"exp true":                       {`{"iss":"https://iss","sub":"u","exp":true}`, ReasonBadClaims},
		"iat beyond float64":             {`{` + base + `,"iat":1e400}`, ReasonBadClaims},
		"trailing data":                  {`{` + base + `} {}`, ReasonMalformed},
		"trailing whitespace":            {`{` + base + "}\n ", ReasonOK},
		"unterminated":                   {`{` + base, ReasonMalformed},
		"act an array":                   {`{` + base + `,"act":["user_admin"]}`, ReasonBadClaims},
		"act a number":                   {`{` + base + `,"act":1}`, ReasonBadClaims},
		"act.sub null":                   {`{` + base + `,"act":{"sub":null}}`, ReasonBadClaims},
		"act.sub empty":                  {`{` + base + `,"act":{"sub":""}}`, ReasonBadClaims},
		"sid a number":                   {`{` + base + `,"sid":1}`, ReasonBadClaims},
		"permissions an array":           {`{` + base + `,"permissions":["a","b"]}`, ReasonOK},
		"permissions a string":           {`{` + base + `,"permissions":"a b"}`, ReasonOK},
		"permissions an object":          {`{` + base + `,"permissions":{"a":1}}`, ReasonBadClaims},
		"permissions array of numbers":   {`{` + base + `,"permissions":[1]}`, ReasonBadClaims},
		"org_permissions a string":       {`{` + base + `,"org_permissions":"org:a:read"}`, ReasonOK},
		"org_id a number":                {`{` + base + `,"org_id":1}`, ReasonBadClaims},
		"v2 o absent":                    {`{` + base + `,"v":2}`, ReasonOK},
		"v2 o null":                      {`{` + base + `,"v":2,"o":null}`, ReasonOK},
		"v2 o an array":                  {`{` + base + `,"v":2,"o":[]}`, ReasonBadClaims},
		"v2 o.rol a number":              {`{` + base + `,"v":2,"o":{"rol":1}}`, ReasonBadClaims},
		"v2 fea a number":                {`{` + base + `,"v":2,"o":{"id":"org_1"},"fea":1}`, ReasonBadClaims},
		"v a string reads as v1":         {`{` + base + `,"v":"2","o":"not read"}`, ReasonOK},
		"tier a number is the default":   {`{` + base + `,"tier":1}`, ReasonOK},
		"public_metadata an array":       {`{` + base + `,"public_metadata":[1]}`, ReasonOK},
		"invalid UTF-8 in a claim value": {"{" + base + `,"azp":"` + "\xff" + `"}`, ReasonOK},
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
}

// TestPayloadClaimValues checks the values the lean decoder maps, for the
// shapes TestPayloadStrictJSON only judges.
func TestPayloadClaimValues(t *testing.T) {
	v := &Verifier{cfg: Config{Issuer: "https://iss", Leeway: time.Second,
		Claims: ClaimsMapping{TierClaim: "plan", DefaultTier: "free", PermissionsClaim: "scope"}}}
	now := time.Unix(1_700_000_000, 0)
	payload := `{"iss":"https://iss","s\u0075b":"user_\u00e9","exp":1.70000006e9,"iat":1699999990.25,"sid":"sess_1",` +
		`"act":{"sub":"user_admin","act":{"sub":"user_root"}},"v":2,"o":{"id":"org_1","slg":"acme","rol":"admin","per":"read,manage","fpm":"2"},` +
		`"fea":"o:scans","scope":"extra:one extra:two","public_metadata":{"plan":"pro"},"unknown":{"deep":[1,{"x":null}]}}`
	s, err := v.sessionFromPayload(base64.RawURLEncoding.EncodeToString([]byte(payload)), now)
	if err != nil {
		t.Fatal(err)
	}
	want := &Session{
		Subject: "user_é", SessionID: "sess_1", Actor: "user_admin",
		OrgID: "org_1", OrgSlug: "acme", OrgRole: "org:admin",
		Permissions: []string{"org:scans:read", "extra:one", "extra:two"}, Tier: "pro",
		IssuedAt: time.Unix(1699999990, 250_000_000).UTC(), Expiry: time.Unix(1700000060, 0).UTC(),
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("session (-want, +got):\n%s", diff)
	}
}

// TestHeaderStrictJSON checks the header decoder on duplicate, escaped,
// case-variant and null members.
func TestHeaderStrictJSON(t *testing.T) {
	v := &Verifier{algorithms: map[string]algorithm{"RS256": algorithms["RS256"]}}
	tests := map[string]struct {
		header  string
		want    string
		wantKID string
	}{
		"plain":                  {`{"alg":"RS256","kid":"k1","typ":"JWT"}`, ReasonOK, "k1"},
		"duplicate alg":          {`{"alg":"none","alg":"RS256","kid":"k1"}`, ReasonMalformed, ""},
		"duplicate kid":          {`{"alg":"RS256","kid":"k1","kid":"k2"}`, ReasonMalformed, ""},
		"escaped alg name":       {`{"\u0061lg":"RS256"}`, ReasonOK, ""},
		"escaped alg value":      {`{"alg":"RS\u003256"}`, ReasonOK, ""},
		"Alg is not alg":         {`{"Alg":"RS256"}`, ReasonBadAlgorithm, ""},
		"alg null":               {`{"alg":null}`, ReasonBadAlgorithm, ""},
		"alg an array":           {`{"alg":["RS256"]}`, ReasonBadAlgorithm, ""},
		"alg HS256":              {`{"alg":"HS256"}`, ReasonBadAlgorithm, ""},
		"alg rs256":              {`{"alg":"rs256"}`, ReasonBadAlgorithm, ""},
		"kid null is no kid":     {`{"alg":"RS256","kid":null}`, ReasonOK, ""},
		"kid an object":          {`{"alg":"RS256","kid":{}}`, ReasonBadHeader, ""},
		"crit null":              {`{"alg":"RS256","crit":null}`, ReasonBadHeader, ""},
		"b64 true":               {`{"alg":"RS256","b64":true}`, ReasonBadHeader, ""},
		"CRIT is not crit":       {`{"alg":"RS256","CRIT":["exp"]}`, ReasonOK, ""},
		"duplicate in jwk":       {`{"alg":"RS256","jwk":{"n":"a","n":"b"}}`, ReasonMalformed, ""},
		"trailing garbage":       {`{"alg":"RS256"}x`, ReasonMalformed, ""},
		"not an object":          {`"RS256"`, ReasonMalformed, ""},
		"invalid UTF-8 in a kid": {`{"alg":"RS256","kid":"` + "\xff" + `"}`, ReasonOK, "\uFFFD"},
	}
	for name, tc := range tests {
		h, err := v.parseHeader(base64.RawURLEncoding.EncodeToString([]byte(tc.header)))
		if got := Reason(err); got != tc.want || (err == nil && h.kid != tc.wantKID) {
			t.Errorf("%s: header %+v, reason %s; want kid %q, reason %s", name, h, got, tc.wantKID, tc.want)
		}
	}
}

// TestPeekSessionID: the unverified sid hint, and nothing for tokens whose
// payload cannot be read.
func TestPeekSessionID(t *testing.T) {
	seg := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tests := map[string]string{
		"e30." + seg(`{"sid":"sess_1","sub":"u"}`) + ".c2ln": "sess_1",
		"e30." + seg(`{"sub":"u"}`) + ".c2ln":                "",
		"e30." + seg(`{"sid":1}`) + ".c2ln":                  "",
		"e30." + seg(`{"sid":"a","sid":"b"}`) + ".c2ln":      "",
		"e30." + seg(`{"SID":"sess_1"}`) + ".c2ln":           "",
		"e30.!!!.c2ln": "",
		"no dots":      "",
		"e30." + seg(`{"sid":"sess_\u0031"}`) + ".c2ln":           "sess_1",
		strings.Repeat("a", MaxTokenSize) + "." + seg(`{}`) + ".": "",
	}
	for tok, want := range tests {
		if got := PeekSessionID(tok); got != want {
			t.Errorf("PeekSessionID(%.40q) = %q, want %q", tok, got, want)
		}
	}
}

// FuzzDecodeClaims: the lean decoder never panics, and accepts only what
// encoding/json also reads as an object (it may refuse more: duplicates).
func FuzzDecodeClaims(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"iss":"a","exp":1}`, `{"a":1,"a":2}`, `{"\u0061":1}`, `[]`, `null`, `{"o":{"id":"x"}}`, "{\"x\":\"\xff\"}",
	} {
		f.Add([]byte(seed))
	}
	v := &Verifier{cfg: Config{Claims: ClaimsMapping{TierClaim: "tier", PermissionsClaim: "scope"}}}
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, ok := v.decodeClaims(doc)
		if !ok {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(doc, &m); err != nil || m == nil {
			t.Fatalf("decodeClaims accepted %q, encoding/json refuses it: %v", doc, err)
		}
		if _, present := m["iss"]; present != (c.iss != nil) {
			t.Fatalf("iss present %v in %q, decoded %q", present, doc, c.iss)
		}
	})
}
