package extauthz

import (
	"strings"

	"github.com/odin-scan/odin-authz/credential"
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
// parsing.
const MaxCredentialLen = credential.MaxLen

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

// ExtractCredential reads the credential of a request: an API key in
// `Authorization: Bearer` or `api-key`, a JWT only in `Authorization:
// Bearer`, each header read as credential.ParseBearer and ParseAPIKey say
// (the same rules odin admin applies); two different values are ambiguous.
func ExtractCredential(h Headers) Credential {
	authz, apiKey := h.Get("authorization"), h.Get("api-key")
	c := Credential{InAuthorization: authz != "", InAPIKey: apiKey != ""}
	if !c.InAuthorization && !c.InAPIKey {
		return c
	}
	var bearer string
	if c.InAuthorization {
		v, reason := credential.ParseBearer(authz)
		if reason != "" {
			return c.malformed(reason)
		}
		bearer = v
	}
	if c.InAPIKey {
		var reason string
		if apiKey, reason = credential.ParseAPIKey(apiKey); reason != "" {
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
