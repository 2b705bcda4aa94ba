package denial

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/denial/denialtest"
)

func TestCompact(t *testing.T) {
	now := time.Date(2025, 1, 15, 11, 30, 0, 0, time.FixedZone("CET", 3600))
	tests := []struct {
		name string
		body Body
		want string
	}{
		{"401", New(Unauthorized, MessageUnauthorized, "req-abc123", now),
			`{"error":{"code":"UNAUTHORIZED","message":"Invalid or expired authentication token"},"timestamp":"2025-01-15T10:30:00Z","requestId":"req-abc123"}`},
		{"unescaped", New(Forbidden, `needs <scans>:write & more`, "r", now),
			`{"error":{"code":"FORBIDDEN","message":"needs <scans>:write & more"},"timestamp":"2025-01-15T10:30:00Z","requestId":"r"}`},
		{"field", Body{Error: Detail{Code: InvalidRequest, Message: "m", Field: "name"}, Timestamp: "t", RequestID: "r"},
			`{"error":{"code":"INVALID_REQUEST","message":"m","field":"name"},"timestamp":"t","requestId":"r"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, string(tc.body.Compact())); diff != "" {
				t.Errorf("Compact (-want, +got):\n%s", diff)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	want := map[Code]int{
		Unauthorized: http.StatusUnauthorized, Forbidden: http.StatusForbidden, RateLimited: http.StatusTooManyRequests,
		Unavailable: http.StatusServiceUnavailable, Internal: http.StatusInternalServerError,
		InvalidRequest: http.StatusBadRequest, NotFound: http.StatusNotFound, Conflict: http.StatusConflict,
	}
	got := map[Code]int{}
	for c := range want {
		got[c] = c.Status()
		if c.Challenges() != (c.Status() == http.StatusUnauthorized) {
			t.Errorf("%s: Challenges() = %v with status %d", c, c.Challenges(), c.Status())
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Status (-want, +got):\n%s", diff)
	}
}

// TestReverificationHint checks the reverification body against the shape
// of Clerk's reverificationError (testdata), and against what Clerk's
// useReverification() tests before it prompts: isReverificationHint (an
// object with clerk_error.type "forbidden" and clerk_error.reason
// "reverification-error") and validateReverificationConfig (a known level
// and a positive afterMinutes).
func TestReverificationHint(t *testing.T) {
	now := time.Date(2025, 1, 15, 10, 30, 0, 0, time.UTC)
	b := NewReverification("second_factor", 10, "req-1", now)
	var got map[string]any
	if err := json.Unmarshal(b.Compact(), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(any(denialtest.ClerkHint(t, "second_factor", 10)), got["clerk_error"]); diff != "" {
		t.Errorf("clerk_error (-Clerk's shape, +ours):\n%s", diff)
	}
	if !isReverificationHint(got) {
		t.Errorf("Clerk's SDK would not see a reverification hint in %s", b.Compact())
	}
	want := `{"error":{"code":"FORBIDDEN","message":"Additional verification required"},"timestamp":"2025-01-15T10:30:00Z","requestId":"req-1",` +
		`"clerk_error":{"type":"forbidden","reason":"reverification-error","metadata":{"reverification":{"level":"second_factor","afterMinutes":10}}}}`
	if diff := cmp.Diff(want, string(b.Compact())); diff != "" {
		t.Errorf("body (-want, +got):\n%s", diff)
	}
	plain := New(Forbidden, "Insufficient permissions", "req-1", now)
	var plainGot map[string]any
	if err := json.Unmarshal(plain.Compact(), &plainGot); err != nil || isReverificationHint(plainGot) {
		t.Errorf("a plain 403 reads as a reverification hint: %s", plain.Compact())
	}
}

// isReverificationHint is Clerk's isReverificationHint and
// validateReverificationConfig (packages/shared/src/authorization-errors.ts
// and authorization.ts), restated in Go.
func isReverificationHint(body map[string]any) bool {
	ce, ok := body["clerk_error"].(map[string]any)
	if !ok || ce["type"] != "forbidden" || ce["reason"] != "reverification-error" {
		return false
	}
	md, _ := ce["metadata"].(map[string]any)
	rv, _ := md["reverification"].(map[string]any)
	level, _ := rv["level"].(string)
	after, _ := rv["afterMinutes"].(float64)
	return (level == "first_factor" || level == "second_factor" || level == "multi_factor") && after > 0
}
