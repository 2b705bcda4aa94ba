package extauthz

import (
	"context"
	"time"
)

// Authenticator decides one kind of credential: who presents it, or why it
// is refused. Adding a kind of credential is an Authenticator in a file of
// its own plus its extraction rule (ExtractCredential and CredentialKind);
// Authorizer.authenticators maps each kind to its Authenticator.
//
// Authenticate runs on every request that presents such a credential: an
// answer from a cache must not allocate. It never fails: a store that
// cannot be reached is DenyUnavailable, never DenyUnauthorized nor Allow.
type Authenticator interface {
	Authenticate(ctx context.Context, credential string, now time.Time) Authentication
}

// Authentication is an Authenticator's answer: Allow with the Principal, or
// DenyUnauthorized or DenyUnavailable with a fixed Reason (for logs and
// metrics, never the credential).
type Authentication struct {
	Outcome Outcome
	Reason  string
	// Message, when set, replaces the outcome's default message (a fixed
	// string: a disabled key's).
	Message   string
	Principal *Principal
	// StoreWait is how long the answer waited for PostgreSQL or Redis
	// (zero when an in-process cache answered): the metrics tell it apart
	// from odin's own time.
	StoreWait time.Duration
}

// denied is a refusal with its reason.
func denied(o Outcome, reason string) Authentication {
	return Authentication{Outcome: o, Reason: reason}
}

// allowed is an authenticated principal.
func allowed(p *Principal) Authentication {
	return Authentication{Outcome: Allow, Principal: p}
}

// notConfigured are the refusal reasons of credential kinds that have no
// Authenticator (session tokens without a JWKS), built once rather than on
// every request.
var notConfigured = func() (r [numCredentialKinds]string) {
	for k := range r {
		r[k] = CredentialKind(k).String() + "_not_configured"
	}
	return r
}()
