package jwtauth

import (
	"context"
	"errors"
)

// Reasons are the stable labels of verification outcomes, used as metric
// label values and returned by Reason. The set is small and fixed; nothing
// from the token ever becomes a label.
const (
	ReasonOK           = "ok"
	ReasonTooLarge     = "too_large"     // longer than MaxTokenSize
	ReasonMalformed    = "malformed"     // not three base64url segments of JSON
	ReasonBadAlgorithm = "bad_alg"       // alg missing, none, HMAC or not allowlisted
	ReasonBadHeader    = "bad_header"    // crit, b64, or a header field of the wrong type
	ReasonUnknownKID   = "unknown_kid"   // kid not in the key set, even after a refresh
	ReasonNoKey        = "no_key"        // no key fits the alg, or no kid and several keys fit
	ReasonBadSignature = "bad_signature" // the signature does not verify
	ReasonExpired      = "expired"       // exp missing or past
	ReasonNotYetValid  = "not_yet_valid" // nbf or iat in the future
	ReasonBadIssuer    = "bad_issuer"    // iss is not Config.Issuer
	ReasonBadAZP       = "bad_azp"       // azp missing or not allowlisted
	ReasonBadAudience  = "bad_audience"  // aud does not name a configured audience
	ReasonBadClaims    = "bad_claims"    // a claim of the wrong type, or no sub
	ReasonUnavailable  = "unavailable"   // no key set loaded and the JWKS cannot be fetched
	ReasonCanceled     = "canceled"      // the caller's context ended first
	ReasonInternal     = "internal"      // a bug caught (a recovered panic)
)

var allReasons = []string{
	ReasonOK, ReasonTooLarge, ReasonMalformed, ReasonBadAlgorithm, ReasonBadHeader,
	ReasonUnknownKID, ReasonNoKey, ReasonBadSignature, ReasonExpired, ReasonNotYetValid,
	ReasonBadIssuer, ReasonBadAZP, ReasonBadAudience, ReasonBadClaims, ReasonUnavailable,
	ReasonCanceled, ReasonInternal,
}

// tokenError is an ErrInvalidToken with the reason it was refused. detail is
// a fixed phrase chosen here, never a value taken from the token.
type tokenError struct {
	reason, detail string
}

func (e *tokenError) Error() string {
	return ErrInvalidToken.Error() + " (" + e.reason + "): " + e.detail
}

func (e *tokenError) Unwrap() error { return ErrInvalidToken }

func invalid(reason, detail string) error {
	return &tokenError{reason: reason, detail: detail}
}

// unavailableError is an ErrUnavailable carrying the last fetch failure.
type unavailableError struct{ cause error }

func (e *unavailableError) Error() string {
	if e.cause == nil {
		return ErrUnavailable.Error()
	}
	return ErrUnavailable.Error() + ": " + e.cause.Error()
}

func (e *unavailableError) Unwrap() error { return ErrUnavailable }

// Reason returns the stable label of a Verify outcome: ReasonOK for nil, the
// refusal reason for an ErrInvalidToken, ReasonUnavailable, ReasonCanceled
// for a context error, and ReasonInternal for anything else.
func Reason(err error) string {
	var te *tokenError
	switch {
	case err == nil:
		return ReasonOK
	case errors.As(err, &te):
		return te.reason
	case errors.Is(err, ErrUnavailable):
		return ReasonUnavailable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ReasonCanceled
	default:
		return ReasonInternal
	}
}
