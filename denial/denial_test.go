package denial

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
