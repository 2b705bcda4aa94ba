package webhooks

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	svix "github.com/svix/svix-webhooks/go"

	"github.com/odin-scan/odin-authz/keystore"
)

// Endpoint is one receiver of the events: where they go, the secret they
// are signed with, and which types it takes.
type Endpoint struct {
	// Name identifies the endpoint in the delivery status, logs and
	// metrics: letters, digits, '-' and '_'. Renaming an endpoint makes
	// pending events go to it again.
	Name string `json:"name"`
	// URL receives each event as a POST; redirects are not followed.
	URL string `json:"url"`
	// Secret is the Standard Webhooks signing secret, whsec_ and base64.
	Secret string `json:"secret"`
	// Types are the event types it takes; empty: all of them.
	Types []string `json:"types,omitempty"`
}

// String names the endpoint without its secret, nor its URL (whose query
// may hold a token).
func (e Endpoint) String() string { return "endpoint " + e.Name }

// takes reports whether the endpoint receives events of type typ.
func (e Endpoint) takes(typ string) bool { return len(e.Types) == 0 || slices.Contains(e.Types, typ) }

var endpointName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ParseEndpoints reads a JSON array of endpoints, as the
// --outgoing-webhooks-file holds it, strictly: an unknown field is an
// error. Errors never quote a secret.
func ParseEndpoints(data []byte) ([]Endpoint, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var eps []Endpoint
	if err := dec.Decode(&eps); err != nil {
		return nil, fmt.Errorf("outgoing webhook endpoints: not a JSON array of {name, url, secret, types}: %w", err)
	}
	return eps, ValidateEndpoints(eps)
}

// ValidateEndpoints checks each endpoint: a unique name, an http(s) URL, a
// secret the Standard Webhooks libraries accept, known event types.
func ValidateEndpoints(eps []Endpoint) error {
	seen := map[string]bool{}
	for i, e := range eps {
		if !endpointName.MatchString(e.Name) {
			return fmt.Errorf("outgoing webhook endpoint %d: name: 1 to 64 letters, digits, '-' or '_'", i+1)
		}
		if seen[e.Name] {
			return fmt.Errorf("outgoing webhook %s: the name is used twice", e)
		}
		seen[e.Name] = true
		u, err := url.Parse(e.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("outgoing webhook %s: url: an absolute http or https URL is required", e)
		}
		if !validSecret(e.Secret) {
			return fmt.Errorf("outgoing webhook %s: secret: not a signing secret (whsec_ and the base64 of 24 to 64 random bytes)", e)
		}
		for _, t := range e.Types {
			if !slices.Contains(keystore.EventTypes, t) {
				return fmt.Errorf("outgoing webhook %s: types: %q is not an event type (%v)", e, t, keystore.EventTypes)
			}
		}
	}
	return nil
}

// validSecret reports whether s is a Standard Webhooks secret: whsec_ and
// the base64 of 24 to 64 bytes.
func validSecret(s string) bool {
	raw, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return false
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil || len(key) < 24 || len(key) > 64 {
		return false
	}
	_, err = svix.NewWebhook(s)
	return err == nil
}
