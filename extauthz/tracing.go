package extauthz

import (
	"context"

	"github.com/odin-scan/odin-authz/internal/telemetry"
)

// traceDecision records the decision on the request's span (Check or
// forward-auth) when one is recording; otherwise it costs one context
// lookup and builds nothing. The credential itself is never recorded.
func traceDecision(ctx context.Context, d *Decision, r *Request) {
	if !telemetry.Recording(ctx) {
		return
	}
	t := telemetry.Decision{
		RequestID: d.RequestID, Code: d.Outcome.Code(), Reason: d.Reason, Credential: d.Credential.Kind.String(),
		Method: r.Method, Path: r.Path,
	}
	if d.Outcome == Allow && d.Principal != nil {
		t.KeyID, t.UserID = d.Principal.KeyID, d.Principal.Subject
	}
	telemetry.Annotate(ctx, t)
}
