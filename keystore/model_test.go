package keystore

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPageLimit(t *testing.T) {
	for _, tc := range []struct{ limit, want int }{
		{-1, 50}, {0, 50}, {1, 1}, {50, 50}, {999, 999}, {1000, 1000}, {1001, 1000}, {1 << 30, 1000},
	} {
		if got := PageLimit(tc.limit); got != tc.want {
			t.Errorf("PageLimit(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
}

func TestAuditEventPrepare(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ev          AuditEvent
		want        AuditEvent
		wantDetails map[string]any
	}{
		{
			name:        "filled in",
			ev:          AuditEvent{Actor: "a", Action: ActionKeyRevoked},
			want:        AuditEvent{Actor: "a", Action: ActionKeyRevoked, Target: "key_1", Owner: "user_1"},
			wantDetails: map[string]any{},
		},
		{
			name:        "kept",
			ev:          AuditEvent{Target: "sess_1", Owner: "org_1", Details: map[string]any{"x": 1}},
			want:        AuditEvent{Target: "sess_1", Owner: "org_1", Details: map[string]any{"x": 1}},
			wantDetails: map[string]any{"x": 1},
		},
	} {
		ev := tc.ev
		details := ev.Prepare("key_1", "user_1")
		if diff := cmp.Diff(tc.want, ev); diff != "" {
			t.Errorf("%s: event (-want, +got):\n%s", tc.name, diff)
		}
		if diff := cmp.Diff(tc.wantDetails, details); diff != "" || details == nil {
			t.Errorf("%s: details %v (-want, +got):\n%s", tc.name, details, diff)
		}
	}
}
