package extauthz

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/keystore"
)

func TestExtractCredential(t *testing.T) {
	key, _ := keystore.GenerateKey()
	other, _ := keystore.GenerateKey()
	const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyXzEifQ.c2ln"
	tests := []struct {
		name    string
		headers MapHeaders
		want    Credential
	}{
		{"none", MapHeaders{"x-other": "1"}, Credential{}},
		{"bearer key", MapHeaders{"authorization": "Bearer " + key},
			Credential{Kind: CredentialAPIKey, Value: key, InAuthorization: true}},
		{"api-key header", MapHeaders{"api-key": key},
			Credential{Kind: CredentialAPIKey, Value: key, InAPIKey: true}},
		{"scheme case-insensitive", MapHeaders{"authorization": "bEaReR " + key},
			Credential{Kind: CredentialAPIKey, Value: key, InAuthorization: true}},
		{"whitespace trimmed", MapHeaders{"authorization": "  Bearer \t " + key + "  ", "api-key": " " + key + " "},
			Credential{Kind: CredentialAPIKey, Value: key, InAuthorization: true, InAPIKey: true}},
		{"both headers same value", MapHeaders{"authorization": "Bearer " + key, "api-key": key},
			Credential{Kind: CredentialAPIKey, Value: key, InAuthorization: true, InAPIKey: true}},
		{"both headers different values", MapHeaders{"authorization": "Bearer " + key, "api-key": other},
			Credential{Kind: CredentialMalformed, Reason: "ambiguous", InAuthorization: true, InAPIKey: true}},
		{"bearer jwt", MapHeaders{"authorization": "Bearer " + jwt},
			Credential{Kind: CredentialJWT, Value: jwt, InAuthorization: true}},
		{"jwt in api-key refused", MapHeaders{"api-key": jwt},
			Credential{Kind: CredentialMalformed, Reason: "api_key_header_not_a_key", InAPIKey: true}},
		{"basic scheme", MapHeaders{"authorization": "Basic dXNlcjpwYXNz"},
			Credential{Kind: CredentialMalformed, Reason: "not_bearer", InAuthorization: true}},
		{"bearer without token", MapHeaders{"authorization": "Bearer   "},
			Credential{Kind: CredentialMalformed, Reason: "not_bearer", InAuthorization: true}},
		{"bearer glued to token", MapHeaders{"authorization": "Bearer" + key},
			Credential{Kind: CredentialMalformed, Reason: "not_bearer", InAuthorization: true}},
		{"repeated header joined by envoy", MapHeaders{"authorization": "Bearer " + key + ",Bearer " + other},
			Credential{Kind: CredentialMalformed, Reason: "non_printable", InAuthorization: true}},
		{"non-printable", MapHeaders{"authorization": "Bearer odin_sk_\x00abc"},
			Credential{Kind: CredentialMalformed, Reason: "non_printable", InAuthorization: true}},
		{"non-ascii", MapHeaders{"api-key": "odin_sk_é"},
			Credential{Kind: CredentialMalformed, Reason: "non_printable", InAPIKey: true}},
		{"oversized", MapHeaders{"authorization": "Bearer " + strings.Repeat("a", 64<<10)},
			Credential{Kind: CredentialMalformed, Reason: "oversized", InAuthorization: true}},
		{"empty api-key after trim", MapHeaders{"api-key": "   "},
			Credential{Kind: CredentialMalformed, Reason: "empty", InAPIKey: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ExtractCredential(tt.headers)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ExtractCredential (-want, +got):\n%s", diff)
			}
		})
	}
}
