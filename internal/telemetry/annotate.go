package telemetry

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// The attributes odin adds to its spans. None carries a credential: only
// its kind, and once allowed the key id or user id.
const (
	AttrRequestID  = attribute.Key("odin.request_id")
	AttrDecision   = attribute.Key("odin.decision")   // allow, or the error code: UNAUTHORIZED, FORBIDDEN, RATE_LIMITED, UNAVAILABLE
	AttrReason     = attribute.Key("odin.reason")     // the decision's stable reason (unknown_key, missing_scope, ...)
	AttrCredential = attribute.Key("odin.credential") // none, malformed, api_key, jwt
	AttrKeyID      = attribute.Key("odin.key_id")
	AttrUserID     = attribute.Key("odin.user_id")
	// The checked request (not the Check RPC or forward-auth subrequest
	// itself); the path without its query string, which may carry anything.
	AttrRequestMethod = attribute.Key("odin.request.method")
	AttrRequestPath   = attribute.Key("odin.request.path")
	AttrActor         = attribute.Key("odin.actor") // admin API caller: operator, user or org
)

// Decision is what a Check or forward-auth span records about its answer.
type Decision struct {
	RequestID string
	// Code is the denial code; empty when the request is allowed.
	Code       string
	Reason     string
	Credential string
	// KeyID and UserID identify who was allowed; leave them empty on a
	// denial.
	KeyID, UserID string
	Method, Path  string
}

// Recording reports whether ctx carries a span that is recording: callers
// test it before building a Decision, so tracing off (or a trace not
// sampled) costs one context lookup and builds nothing.
func Recording(ctx context.Context) bool {
	return trace.SpanFromContext(ctx).IsRecording()
}

// Annotate records d on the span in ctx. An UNAVAILABLE answer (the stores
// or the identity provider failing) also marks the span as an error.
func Annotate(ctx context.Context, d Decision) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	decision := d.Code
	if decision == "" {
		decision = "allow"
	}
	path, _, _ := strings.Cut(d.Path, "?")
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs, AttrRequestID.String(d.RequestID), AttrDecision.String(decision), AttrCredential.String(d.Credential),
		AttrRequestMethod.String(d.Method), AttrRequestPath.String(path))
	if d.Reason != "" {
		attrs = append(attrs, AttrReason.String(d.Reason))
	}
	if d.Code == "" && d.KeyID != "" {
		attrs = append(attrs, AttrKeyID.String(d.KeyID))
	}
	if d.Code == "" && d.UserID != "" {
		attrs = append(attrs, AttrUserID.String(d.UserID))
	}
	span.SetAttributes(attrs...)
	if d.Code == "UNAVAILABLE" {
		span.SetStatus(codes.Error, d.Reason)
	}
}

// AnnotateActor records who called the admin API: "operator", "user" or
// "org". The admin API calls it once it has authenticated the caller.
func AnnotateActor(ctx context.Context, kind string) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(AttrActor.String(kind))
	}
}
