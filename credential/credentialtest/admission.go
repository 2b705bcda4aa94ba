// Package credentialtest holds the table of session admission cases that
// odin authz and odin admin are both tested with, so that the two entry
// points are held to one rule.
package credentialtest

import (
	_ "embed"
	"encoding/json"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

//go:embed testdata/admission.json
var admissionJSON []byte

// AdmissionCase is one row of the table: a token minted with some claims
// changed, sent in an Authorization value, and whether it is admitted (with
// the retention of 24 hours, the default).
type AdmissionCase struct {
	Name string `json:"name"`
	// Authorization is the header value; {{token}} stands for the token.
	Authorization string `json:"authorization"`
	// Omit names claims left out: iat, nbf, sid.
	Omit []string `json:"omit"`
	// IssuedAt, NotBefore and Expiry are seconds from now; nil keeps the
	// dev issuer's default (iat now, nbf iat, exp iat + 60 s).
	IssuedAt  *int `json:"iat"`
	NotBefore *int `json:"nbf"`
	Expiry    *int `json:"exp"`
	// AllowNoSID runs the case with the setting that admits tokens without sid.
	AllowNoSID bool `json:"allow_no_sid"`
	// Allow is the expected answer; Reason, for a refusal, the logged reason
	// of odin authz (odin admin adds it to its log line too).
	Allow  bool   `json:"allow"`
	Reason string `json:"reason"`
}

// AdmissionCases returns the table. It panics on a malformed file: the
// table is part of the tests.
func AdmissionCases() []AdmissionCase {
	var doc struct {
		Cases []AdmissionCase `json:"cases"`
	}
	if err := json.Unmarshal(admissionJSON, &doc); err != nil {
		panic("credentialtest: testdata/admission.json: " + err.Error())
	}
	if len(doc.Cases) == 0 {
		panic("credentialtest: testdata/admission.json has no cases")
	}
	return doc.Cases
}

// Claims returns base changed as the case says, times counted from now.
func (c AdmissionCase) Claims(base devissuer.Claims, now time.Time) devissuer.Claims {
	at := func(s *int) time.Time { return now.Add(time.Duration(*s) * time.Second) }
	if c.IssuedAt != nil {
		base.IssuedAt = at(c.IssuedAt)
	}
	if c.NotBefore != nil {
		base.NotBefore = at(c.NotBefore)
	}
	if c.Expiry != nil {
		base.Expiry = at(c.Expiry)
	}
	extra := map[string]any{}
	for k, v := range base.Extra {
		extra[k] = v
	}
	for _, name := range c.Omit {
		extra[name] = nil // the dev issuer removes a claim set to nil
	}
	base.Extra = extra
	return base
}

// Header returns the Authorization value carrying token.
func (c AdmissionCase) Header(token string) string {
	return strings.ReplaceAll(c.Authorization, "{{token}}", token)
}
