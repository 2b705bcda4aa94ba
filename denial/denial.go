// Package denial is how odin authz and odin admin refuse a request: the
// error body of docs/CONTRACT.md (code, message, timestamp, requestId), its
// codes and the HTTP status each is sent with, the fixed messages both
// services send, and the Bearer challenge of a 401. Both services render
// their refusals from these definitions, so a client reads one format
// whichever service answered.
package denial

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"
)

// Code is an error body's code. Clients branch on it, and the strings
// double as metric label values: they never change.
type Code string

// The codes of the error body. odin authz sends the first five; odin admin
// sends all but RateLimited for a decision, and RateLimited for a client
// past its failed-authentication budget.
const (
	Unauthorized   Code = "UNAUTHORIZED"
	Forbidden      Code = "FORBIDDEN"
	RateLimited    Code = "RATE_LIMITED"
	Unavailable    Code = "UNAVAILABLE"
	Internal       Code = "INTERNAL"
	InvalidRequest Code = "INVALID_REQUEST"
	NotFound       Code = "NOT_FOUND"
	Conflict       Code = "CONFLICT"
)

// Status is the HTTP status a code is sent with.
func (c Code) Status() int {
	switch c {
	case Unauthorized:
		return http.StatusUnauthorized
	case Forbidden:
		return http.StatusForbidden
	case RateLimited:
		return http.StatusTooManyRequests
	case Unavailable:
		return http.StatusServiceUnavailable
	case InvalidRequest:
		return http.StatusBadRequest
	case NotFound:
		return http.StatusNotFound
	case Conflict:
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// Challenges reports whether a refusal with this code carries the
// challenge (ChallengeHeader: Challenge): a 401 does, as RFC 6750 asks.
func (c Code) Challenges() bool { return c == Unauthorized }

// The messages both services send. Messages are short and fixed: they
// never echo the credential nor say whether a key exists.
const (
	// MessageUnauthorized is the 401 message for any credential refused.
	MessageUnauthorized = "Invalid or expired authentication token"
	// MessageMissing is odin authz's 401 message when no credential was
	// sent at all.
	MessageMissing = "Missing authentication token"
	// MessageDisabled is odin authz's 401 message for a valid API key that
	// its owner or the operator disabled: it works again once enabled, so
	// the caller is told it is not invalid. Only the key's holder can get
	// this answer.
	MessageDisabled = "API key is disabled"
	// MessageNetworkNotAllowed is odin authz's 403 message for an API key
	// presented from outside the networks it is restricted to. It names
	// the reason, never the networks.
	MessageNetworkNotAllowed = "API key is not allowed from this network"
	// MessageClientAddressUnknown is odin authz's 403 message for an API
	// key restricted to certain networks when the client's address cannot
	// be told (a proxy reported none, or one that is not an address).
	MessageClientAddressUnknown = "API key is restricted to certain networks and the client address is unknown"
)

// ContentType is the content type of the error body.
const ContentType = "application/json"

// The challenge of a 401 (RFC 6750). The header name is in the lower case
// of HTTP/2 and of Envoy's header maps; net/http canonicalises it.
const (
	ChallengeHeader = "www-authenticate"
	Challenge       = `Bearer realm="odin"`
)

// Body is the error body.
type Body struct {
	Error     Detail `json:"error"`
	Timestamp string `json:"timestamp"` // RFC 3339, UTC
	RequestID string `json:"requestId"`
	// ClerkError is Clerk's reverification hint, on the 403 of a session
	// that must verify a factor again (NewReverification); omitted
	// otherwise.
	ClerkError *ClerkError `json:"clerk_error,omitempty"`
}

// ClerkError is the object Clerk's reverificationError helper returns
// (github.com/clerk/javascript, packages/shared/src/authorization-errors.ts
// at commit e21ae9a4cf189ed20cb04bee94497533cd9d4dbe): a body with it is
// what isReverificationHint recognises, so the useReverification() hook of
// Clerk's frontend SDK prompts the user for the factor in
// metadata.reverification and retries the request.
type ClerkError struct {
	Type     string             `json:"type"`   // always "forbidden"
	Reason   string             `json:"reason"` // always "reverification-error"
	Metadata ClerkErrorMetadata `json:"metadata"`
}

// ClerkErrorMetadata holds the requirement the session missed.
type ClerkErrorMetadata struct {
	Reverification Reverification `json:"reverification"`
}

// Reverification is Clerk's ReverificationConfig in its object form.
type Reverification struct {
	// Level is first_factor, second_factor or multi_factor.
	Level string `json:"level"`
	// AfterMinutes is the longest time since the factor's verification
	// that satisfies the requirement.
	AfterMinutes int `json:"afterMinutes"`
}

// The fixed fields of Clerk's reverification hint.
const (
	ClerkErrorType        = "forbidden"
	ClerkReverifyReason   = "reverification-error"
	MessageReverify       = "Additional verification required"
	MessageReverifyAPIKey = "This route requires a recently verified user session; API keys are not accepted"
)

// NewReverification returns the 403 body of a session that must verify a
// factor again: the FORBIDDEN body with Clerk's hint (ClerkError) for the
// level and the max age in minutes.
func NewReverification(level string, afterMinutes int, requestID string, now time.Time) Body {
	b := New(Forbidden, MessageReverify, requestID, now)
	b.ClerkError = &ClerkError{Type: ClerkErrorType, Reason: ClerkReverifyReason,
		Metadata: ClerkErrorMetadata{Reverification: Reverification{Level: level, AfterMinutes: afterMinutes}}}
	return b
}

// Detail is the error body's "error" object.
type Detail struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// Field names the request field at fault, when there is one (odin
	// admin's invalid requests); omitted otherwise.
	Field string `json:"field,omitempty"`
}

// New returns the body of a refusal made at now.
func New(code Code, message, requestID string, now time.Time) Body {
	return Body{
		Error:     Detail{Code: code, Message: message},
		Timestamp: now.UTC().Format(time.RFC3339),
		RequestID: requestID,
	}
}

// Compact encodes the body as one line with no trailing newline, and
// without escaping <, > and & (a 403 names "<resource>:write": it stays
// readable). odin authz sends these bytes; odin admin writes the body with
// its other JSON answers.
func (b *Body) Compact() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(b) // strings only: cannot fail
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
