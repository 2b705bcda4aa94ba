package extauthz

import (
	"strings"

	"github.com/odin-scan/odin-authz/keystore"
)

// Headers gives the decision read access to a request's headers, whatever
// protocol carried them. Names are lower-case.
type Headers interface {
	// Get returns the value of a header, "" when absent. Repeated headers
	// arrive joined with "," as Envoy sends them.
	Get(name string) string
	// Range calls fn for every header until fn returns false.
	Range(fn func(name, value string) bool)
}

// MapHeaders adapts Envoy's CheckRequest header map (lower-case keys).
type MapHeaders map[string]string

// Get implements Headers.
func (m MapHeaders) Get(name string) string { return m[name] }

// Range implements Headers.
func (m MapHeaders) Range(fn func(name, value string) bool) {
	for k, v := range m {
		if !fn(k, v) {
			return
		}
	}
}

// CredentialKind says what a request presented.
type CredentialKind uint8

// The kinds of credential. Their names are metric label values.
const (
	CredentialNone CredentialKind = iota
	CredentialMalformed
	CredentialAPIKey
	CredentialJWT
	numCredentialKinds
)

var credentialNames = [numCredentialKinds]string{"none", "malformed", "api_key", "jwt"}

func (k CredentialKind) String() string { return credentialNames[k] }

// MaxCredentialLen bounds a credential: longer values are refused before any
// parsing. Clerk session tokens are well under 4 KiB.
const MaxCredentialLen = 8 << 10

// Credential is what extraction found: its kind, its value and the header
// it came from (to strip before the upstream). Reason explains a
// CredentialMalformed for logs; it never contains the value.
type Credential struct {
	Kind   CredentialKind
	Value  string
	Reason string
	// InAuthorization and InAPIKey say which headers carried a credential.
	InAuthorization, InAPIKey bool
}

// ExtractCredential applies SPEC §2: an API key in `Authorization: Bearer`
// or `api-key`, a JWT only in `Authorization: Bearer`; the scheme is
// case-insensitive and surrounding whitespace trimmed; two different values
// are ambiguous; oversized or non-printable values are malformed.
func ExtractCredential(h Headers) Credential {
	authz, apiKey := h.Get("authorization"), h.Get("api-key")
	c := Credential{InAuthorization: authz != "", InAPIKey: apiKey != ""}
	if !c.InAuthorization && !c.InAPIKey {
		return c
	}
	var bearer string
	if c.InAuthorization {
		v, reason := parseBearer(authz)
		if reason != "" {
			return c.malformed(reason)
		}
		bearer = v
	}
	if c.InAPIKey {
		apiKey = strings.TrimSpace(apiKey)
		if reason := checkPrintable(apiKey); reason != "" {
			return c.malformed(reason)
		}
		if c.InAuthorization && apiKey != bearer {
			return c.malformed("ambiguous")
		}
		if !strings.HasPrefix(apiKey, keystore.KeyPrefix) {
			return c.malformed("api_key_header_not_a_key") // JWTs are never accepted here
		}
		c.Kind, c.Value = CredentialAPIKey, apiKey
		return c
	}
	c.Value = bearer
	if strings.HasPrefix(bearer, keystore.KeyPrefix) {
		c.Kind = CredentialAPIKey
	} else {
		c.Kind = CredentialJWT
	}
	return c
}

func (c Credential) malformed(reason string) Credential {
	c.Kind, c.Value, c.Reason = CredentialMalformed, "", reason
	return c
}

// parseBearer returns the token of a Bearer authorization value, or a reason
// it is not one.
func parseBearer(v string) (string, string) {
	v = strings.TrimSpace(v)
	const scheme = "bearer"
	if len(v) < len(scheme)+1 || !strings.EqualFold(v[:len(scheme)], scheme) || (v[len(scheme)] != ' ' && v[len(scheme)] != '\t') {
		return "", "not_bearer"
	}
	tok := strings.TrimSpace(v[len(scheme)+1:])
	if reason := checkPrintable(tok); reason != "" {
		return "", reason
	}
	return tok, ""
}

// checkPrintable refuses empty, oversized and non-printable-ASCII values.
// Real credentials are base62 or base64url with dots; anything else is
// noise or an attack.
func checkPrintable(v string) string {
	if v == "" {
		return "empty"
	}
	if len(v) > MaxCredentialLen {
		return "oversized"
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c > '~' {
			return "non_printable"
		}
	}
	return ""
}
