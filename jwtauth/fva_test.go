package jwtauth

import (
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestFactorVerificationClaim reads fva in every shape a token could carry
// it: a malformed fva leaves the token valid (ReasonOK) and without
// factors, so it can only fail a reverification requirement.
func TestFactorVerificationClaim(t *testing.T) {
	v := &Verifier{cfg: Config{Issuer: "https://iss", Leeway: time.Second, Claims: ClaimsMapping{TierClaim: "tier", DefaultTier: "free"}}}
	now := time.Unix(1_700_000_000, 0)
	seg := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	const base = `"iss":"https://iss","sub":"u","exp":1700000060,"iat":1699999990`
	type result struct {
		Reason  string
		Factors *FactorVerification
	}
	at := func(first, second int32) *FactorVerification {
		return &FactorVerification{IssuedAt: 1699999990, Ages: [2]int32{first, second}}
	}
	tests := map[string]struct {
		payload string
		want    result
	}{
		"fresh":                 {`{` + base + `,"fva":[0,0]}`, result{ReasonOK, at(0, 0)}},
		"no second factor":      {`{` + base + `,"fva":[3,-1]}`, result{ReasonOK, at(3, -1)}},
		"never":                 {`{` + base + `,"fva":[-1,-1]}`, result{ReasonOK, at(-1, -1)}},
		"stale":                 {`{` + base + `,"fva":[1440,600]}`, result{ReasonOK, at(1440, 600)}},
		"integral exponent":     {`{` + base + `,"fva":[1e1,2.0]}`, result{ReasonOK, at(10, 2)}},
		"whitespace":            {`{` + base + `,"fva":[ 1 , 2 ]}`, result{ReasonOK, at(1, 2)}},
		"missing":               {`{` + base + `}`, result{ReasonOK, nil}},
		"null":                  {`{` + base + `,"fva":null}`, result{ReasonOK, nil}},
		"empty":                 {`{` + base + `,"fva":[]}`, result{ReasonOK, nil}},
		"one element":           {`{` + base + `,"fva":[0]}`, result{ReasonOK, nil}},
		"three elements":        {`{` + base + `,"fva":[0,0,0]}`, result{ReasonOK, nil}},
		"fraction":              {`{` + base + `,"fva":[0.5,0]}`, result{ReasonOK, nil}},
		"below -1":              {`{` + base + `,"fva":[-2,0]}`, result{ReasonOK, nil}},
		"negative fraction":     {`{` + base + `,"fva":[-0.5,0]}`, result{ReasonOK, nil}},
		"huge":                  {`{` + base + `,"fva":[1e300,0]}`, result{ReasonOK, nil}},
		"beyond float64":        {`{` + base + `,"fva":[1e400,0]}`, result{ReasonOK, nil}},
		"strings":               {`{` + base + `,"fva":["0","0"]}`, result{ReasonOK, nil}},
		"booleans":              {`{` + base + `,"fva":[true,false]}`, result{ReasonOK, nil}},
		"nulls":                 {`{` + base + `,"fva":[null,null]}`, result{ReasonOK, nil}},
		"nested":                {`{` + base + `,"fva":[[0],[0]]}`, result{ReasonOK, nil}},
		"object":                {`{` + base + `,"fva":{"0":0,"1":0}}`, result{ReasonOK, nil}},
		"string":                {`{` + base + `,"fva":"0,0"}`, result{ReasonOK, nil}},
		"number":                {`{` + base + `,"fva":0}`, result{ReasonOK, nil}},
		"no iat to count from":  {`{"iss":"https://iss","sub":"u","exp":1700000060,"fva":[0,0]}`, result{ReasonOK, nil}},
		"duplicate fva":         {`{` + base + `,"fva":[0,0],"fva":[-1,-1]}`, result{ReasonMalformed, nil}},
		"FVA is not fva":        {`{` + base + `,"FVA":[0,0]}`, result{ReasonOK, nil}},
		"duplicate inside fva":  {`{` + base + `,"fva":[{"a":1,"a":2},0]}`, result{ReasonMalformed, nil}},
		"escaped name is fva":   {`{` + base + `,"f\u0076a":[1,1]}`, result{ReasonOK, at(1, 1)}},
		"fva of a v2 org token": {`{` + base + `,"v":2,"o":{"id":"org_1"},"fva":[0,5]}`, result{ReasonOK, at(0, 5)}},
	}
	want, got := map[string]result{}, map[string]result{}
	for name, tc := range tests {
		want[name] = tc.want
		s, err := v.sessionFromPayload(seg(tc.payload), now)
		r := result{Reason: Reason(err)}
		if s != nil {
			r.Factors = s.Factors
		}
		got[name] = r
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("fva (-want, +got):\n%s", diff)
	}
}

// TestReverificationSatisfied follows Clerk's has({reverification}) at the
// moment of issue, then ages the token.
func TestReverificationSatisfied(t *testing.T) {
	iat := time.Unix(1_700_000_000, 0)
	f := func(first, second int32) *FactorVerification {
		return &FactorVerification{IssuedAt: iat.Unix(), Ages: [2]int32{first, second}}
	}
	first10 := Reverification{FirstFactor, 10 * time.Minute}
	second10 := Reverification{SecondFactor, 10 * time.Minute}
	multi10 := Reverification{MultiFactor, 10 * time.Minute}
	tests := []struct {
		name    string
		r       Reverification
		f       *FactorVerification
		elapsed time.Duration // now − iat
		want    bool
	}{
		{"no fva", second10, nil, 0, false},
		{"never verified", first10, f(-1, -1), 0, false},
		{"never verified, second", second10, f(-1, -1), 0, false},
		{"first fresh", first10, f(0, -1), 0, true},
		{"first at max age", first10, f(10, -1), 0, false},
		{"first just under", first10, f(9, -1), 0, true},
		{"first under, aged past", first10, f(9, -1), time.Minute, false},
		{"first under, aged 59 s", first10, f(9, -1), 59 * time.Second, true},
		{"first without first", first10, f(-1, 0), 0, false},
		{"second fresh", second10, f(30, 2), 0, true},
		{"second stale", second10, f(0, 30), 0, false},
		{"second, none enrolled: first decides", second10, f(2, -1), 0, true},
		{"second, none enrolled, first stale", second10, f(20, -1), 0, false},
		{"second, no first: second decides", second10, f(-1, 2), 0, true},
		{"second aged out in the cache", second10, f(0, 5), 5 * time.Minute, false},
		{"second aging, still fresh", second10, f(0, 5), 4*time.Minute + 59*time.Second, true},
		{"multi both fresh", multi10, f(1, 2), 0, true},
		{"multi first stale", multi10, f(11, 2), 0, false},
		{"multi second stale", multi10, f(1, 12), 0, false},
		{"multi, no second: first decides", multi10, f(1, -1), 0, true},
		{"multi, no first", multi10, f(-1, 1), 0, false},
		{"clock behind the issuer", second10, f(0, 9), -time.Hour, true},
		{"long max age", Reverification{SecondFactor, 24 * time.Hour}, f(0, 1439), 0, true},
	}
	for _, tc := range tests {
		if got := tc.r.Satisfied(tc.f, iat.Add(tc.elapsed)); got != tc.want {
			t.Errorf("%s: %v.Satisfied(%+v, iat%+v) = %v, want %v", tc.name, tc.r, tc.f, tc.elapsed, got, tc.want)
		}
	}
}

func TestParseReverification(t *testing.T) {
	good := map[string]Reverification{
		"second_factor:10m": {SecondFactor, 10 * time.Minute},
		"first_factor:1m":   {FirstFactor, time.Minute},
		"multi_factor:2h":   {MultiFactor, 2 * time.Hour},
		"strict_mfa":        {MultiFactor, 10 * time.Minute},
		"strict":            {SecondFactor, 10 * time.Minute},
		"moderate":          {SecondFactor, time.Hour},
		"lax":               {SecondFactor, 24 * time.Hour},
	}
	for in, want := range good {
		got, err := ParseReverification(in)
		if err != nil || got != want {
			t.Errorf("ParseReverification(%q) = %v, %v; want %v", in, got, err, want)
		}
		if again, err := ParseReverification(got.String()); err != nil || again != got {
			t.Errorf("round trip of %q through %q: %v, %v", in, got.String(), again, err)
		}
	}
	for _, in := range []string{"", "second_factor", "second_factor:", "second_factor:0m", "second_factor:-10m",
		"second_factor:90s", "second_factor:10", "third_factor:10m", "Second_Factor:10m", "second_factor:99999m", "strictest"} {
		if r, err := ParseReverification(in); err == nil {
			t.Errorf("ParseReverification(%q) = %v, want an error", in, r)
		}
	}
}

// TestSatisfiedDoesNotAllocate: a reverification check is on the request
// path of every route that has one.
func TestSatisfiedDoesNotAllocate(t *testing.T) {
	r := Reverification{SecondFactor, 10 * time.Minute}
	f := &FactorVerification{IssuedAt: 1_700_000_000, Ages: [2]int32{0, 1}}
	now := time.Unix(1_700_000_030, 0)
	if n := testing.AllocsPerRun(100, func() { r.Satisfied(f, now) }); n != 0 {
		t.Errorf("Satisfied allocates %v times", n)
	}
}

// FuzzFactorVerification: reading fva never panics, and what it accepts
// is exactly two integers from -1 up, as encoding/json reads them.
func FuzzFactorVerification(f *testing.F) {
	for _, seed := range []string{`[0,-1]`, `[-1,-1]`, `[null,1]`, `[1e1,2.0]`, `[0]`, `[0,0,0]`, `[0.5,1]`, `["0",0]`, `[[0],0]`, `{}`, `null`, `[`, `[1e400,0]`} {
		f.Add([]byte(seed))
	}
	iat := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, raw []byte) {
		// The claim reaches factorVerification only from a payload the
		// decoder accepted: a well-formed value without duplicates.
		doc := append(append([]byte(`{"fva":`), raw...), '}')
		var c claims
		if !forEachMember(doc, func(name, value []byte) {
			if string(name) == "fva" {
				c.fva = value
			}
		}) {
			return
		}
		got := factorVerification(c.fva, iat)
		var elems []any
		refOK := json.Unmarshal(c.fva, &elems) == nil && len(elems) == 2
		var ref [2]float64
		for i, e := range elems {
			x, isNumber := e.(float64)
			refOK = refOK && isNumber && x == float64(int64(x)) && x >= -1 && x <= maxFactorAge
			if i < len(ref) {
				ref[i] = x
			}
		}
		if got == nil {
			if refOK {
				t.Fatalf("fva %q refused; encoding/json reads %v", c.fva, ref)
			}
			return
		}
		if !refOK || float64(got.Ages[0]) != ref[0] || float64(got.Ages[1]) != ref[1] {
			t.Fatalf("fva %q read as %v; encoding/json reads %v", c.fva, got.Ages, ref)
		}
		Reverification{SecondFactor, time.Minute}.Satisfied(got, iat)
	})
}
