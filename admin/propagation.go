package admin

import (
	"errors"
	"net/http"
	"time"

	"github.com/odin-scan/odin-authz/denial"
	"github.com/odin-scan/odin-authz/keystore"
)

// notPropagatedBody is the answer to a change that narrows what a credential
// may do (a revoke, a roll, a session revoke, a user.deleted webhook) when it
// is committed and audited but not confirmed on every replica: 503
// UNAVAILABLE with the standard error body, plus what happened and what to
// do. A 2xx to such a change always means that no replica allows the
// credential after the answer; this answer means some replica may, until
// denied_by at the latest.
type notPropagatedBody struct {
	denial.Body
	// Committed is always true: the change is stored (and audited); it is
	// not undone.
	Committed bool `json:"committed"`
	// ChangedAt is when the change was made.
	ChangedAt time.Time `json:"changed_at"`
	// DeniedBy is when every replica denies the credential at the latest
	// (the change time plus the replicas' cache TTL, or session sync
	// interval for sessions, plus a second).
	DeniedBy time.Time `json:"denied_by"`
	// Retry is the request that propagates the change again and answers
	// 2xx once it is confirmed.
	Retry string `json:"retry"`
	// Result is what the 2xx answer would have carried.
	Result any `json:"result"`
}

// asNotPropagated returns the *keystore.NotPropagatedError in err, if any.
func asNotPropagated(err error) (*keystore.NotPropagatedError, bool) {
	var np *keystore.NotPropagatedError
	return np, errors.As(err, &np)
}

// The kinds of change counted by odin_admin_unconfirmed_changes_total.
const (
	unconfirmedKeyRevoke     = "key_revoke"
	unconfirmedKeyRoll       = "key_roll"
	unconfirmedKeyUpdate     = "key_update"
	unconfirmedKeyDisable    = "key_disable"
	unconfirmedKeyEnable     = "key_enable"
	unconfirmedSessionRevoke = "session_revoke"
	unconfirmedWebhook       = "webhook"
)

var unconfirmedKinds = []string{unconfirmedKeyRevoke, unconfirmedKeyRoll, unconfirmedKeyUpdate, unconfirmedKeyDisable, unconfirmedKeyEnable,
	unconfirmedSessionRevoke, unconfirmedWebhook}

// writeNotPropagated answers an unconfirmed change of a kind (see
// notPropagatedBody), with Retry-After: 1, counts it and logs it.
func (s *Server) writeNotPropagated(w http.ResponseWriter, kind string, np *keystore.NotPropagatedError, message, retry string, result any) error {
	s.unconfirmed.WithLabelValues(kind).Inc()
	b := notPropagatedBody{Body: denial.New(denial.Unavailable, message, w.Header().Get("X-Request-Id"), time.Now()),
		Committed: true, ChangedAt: np.At.UTC(), DeniedBy: np.DeniedBy.UTC(), Retry: retry, Result: result}
	w.Header().Set("Retry-After", "1")
	s.log.Warn("change committed but not confirmed on every replica", "retry", retry,
		"denied_by", b.DeniedBy.Format(time.RFC3339Nano), "request_id", b.RequestID, "error", np.Cause.Error())
	return writeJSON(w, http.StatusServiceUnavailable, b)
}

// retryRequest names the request that propagates a change again: a POST
// of path. (A key update's is the same PATCH, with the same body.)
func retryRequest(path string) string { return http.MethodPost + " " + path }
