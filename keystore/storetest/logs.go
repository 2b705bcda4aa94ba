package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/keystore"
)

func testUsage(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	_, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "t"})
	_, other := create(t, s, keystore.NewKey{UserID: "user_1", Name: "other"})
	if err := s.RecordUsage(ctx, nil); err != nil {
		t.Errorf("empty batch: %v", err)
	}
	hour := time.Now().UTC().Truncate(time.Hour)
	later := time.Now().Add(-time.Minute)
	earlier := later.Add(-time.Hour)
	if err := s.RecordUsage(ctx, []keystore.Usage{
		{KeyID: k.ID, Hour: hour, Count: 3, LastUsed: later},
		{KeyID: k.ID, Hour: hour.Add(-time.Hour), Count: 2, LastUsed: earlier},
		{KeyID: k.ID, Hour: hour.Add(-48 * time.Hour), Count: 5, LastUsed: earlier},
		{KeyID: k.ID, Hour: hour, Count: 1, LastUsed: earlier}, // same hour twice in a batch: added
		{KeyID: other.ID, Hour: hour, Count: 8, LastUsed: earlier},
		{KeyID: "key_missing", Hour: hour, Count: 9, LastUsed: later}, // deleted or unknown: skipped
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordUsage(ctx, []keystore.Usage{{KeyID: k.ID, Hour: hour, Count: 4, LastUsed: earlier}}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Key(ctx, k.ID)
	if !got.LastUsedAt.Equal(later.Truncate(us)) { // never moves back
		t.Errorf("last_used_at = %v, want %v", got.LastUsedAt, later.Truncate(us))
	}
	usage, err := s.KeyUsage(ctx, k.ID, hour.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []keystore.HourlyUsage{{Hour: hour.Add(-time.Hour), Count: 2}, {Hour: hour, Count: 8}}
	if diff := cmp.Diff(want, usage); diff != "" {
		t.Errorf("hourly usage (-want, +got):\n%s", diff)
	}
	if usage, err := s.KeyUsage(ctx, k.ID, hour); err != nil || len(usage) != 1 || usage[0].Count != 8 {
		t.Errorf("usage since this hour: %v, %v", usage, err)
	}
	if usage, err := s.KeyUsage(ctx, "key_missing", hour.Add(-24*time.Hour)); err != nil || len(usage) != 0 {
		t.Errorf("usage of an unknown key: %v, %v; want none", usage, err)
	}
	latest := time.Now()
	if err := s.RecordUsage(ctx, []keystore.Usage{{KeyID: k.ID, Hour: hour, Count: 1, LastUsed: latest}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Key(ctx, k.ID); !got.LastUsedAt.Equal(latest.Truncate(us)) {
		t.Errorf("last_used_at = %v, want %v", got.LastUsedAt, latest.Truncate(us))
	}
	if got, _ := s.Key(ctx, other.ID); !got.LastUsedAt.Equal(earlier.Truncate(us)) {
		t.Errorf("other key's last_used_at = %v, want %v", got.LastUsedAt, earlier.Truncate(us))
	}
}

func testSessionRevocation(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	now := time.Now().Truncate(us)
	a := keystore.RevokedSession{SessionID: "sess_a", RevokedAt: now.Add(-10 * time.Minute), ExpiresAt: now.Add(time.Hour), Reason: "logout"}
	b := keystore.RevokedSession{SessionID: "sess_b", RevokedAt: now.Add(-2 * time.Minute), ExpiresAt: now.Add(time.Hour)}
	old := keystore.RevokedSession{SessionID: "sess_old", RevokedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}
	edge := keystore.RevokedSession{SessionID: "sess_edge", RevokedAt: now.Add(-time.Minute), ExpiresAt: now}
	ev := &keystore.AuditEvent{Actor: "clerk-webhook", Action: keystore.ActionSessionRevoked, Details: map[string]any{"reason": "logout"}}
	if err := s.RevokeSession(ctx, a, ev); err != nil {
		t.Fatal(err)
	}
	for _, r := range []keystore.RevokedSession{b, old, edge} {
		if err := s.RevokeSession(ctx, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	events, _, err := s.ListAudit(ctx, keystore.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Target != "sess_a" || events[0].Owner != "" || events[0].Action != keystore.ActionSessionRevoked {
		t.Errorf("audit events %+v, want one session.revoked for sess_a", events)
	}

	load := func(since, at time.Time) []keystore.RevokedSession {
		t.Helper()
		got, err := s.RevokedSessions(ctx, since, at)
		if err != nil {
			t.Fatal(err)
		}
		return sortedSessions(got)
	}
	// Expired revocations are not loaded; expiry at exactly now is expired.
	if diff := cmp.Diff([]keystore.RevokedSession{a, b}, load(now.Add(-time.Hour), now)); diff != "" {
		t.Errorf("revocations of the last hour (-want, +got):\n%s", diff)
	}
	if diff := cmp.Diff([]keystore.RevokedSession{b}, load(b.RevokedAt, now)); diff != "" {
		t.Errorf("revocations since sess_b's (-want, +got):\n%s", diff)
	}
	if got := load(b.RevokedAt.Add(us), now); len(got) != 0 {
		t.Errorf("revocations after the last one: %+v", got)
	}

	// Revoking again keeps the first time and reason and the later expiry.
	if err := s.RevokeSession(ctx, keystore.RevokedSession{SessionID: "sess_a", RevokedAt: now, ExpiresAt: now.Add(2 * time.Hour), Reason: "again"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeSession(ctx, keystore.RevokedSession{SessionID: "sess_a", RevokedAt: now, ExpiresAt: now.Add(30 * time.Minute)}, nil); err != nil {
		t.Fatal(err)
	}
	extended := a
	extended.ExpiresAt = now.Add(2 * time.Hour)
	if diff := cmp.Diff([]keystore.RevokedSession{extended}, load(now.Add(-time.Hour), now.Add(90*time.Minute))); diff != "" {
		t.Errorf("after re-revoking sess_a, in 90 minutes (-want, +got):\n%s", diff)
	}

	for _, tc := range []struct {
		at   time.Time
		want int64
	}{{now, 2}, {now, 0}, {now.Add(90 * time.Minute), 1}} {
		if n, err := s.PruneRevokedSessions(ctx, tc.at); err != nil || n != tc.want {
			t.Errorf("PruneRevokedSessions(%v) = %d, %v; want %d", tc.at, n, err, tc.want)
		}
	}
	if diff := cmp.Diff([]keystore.RevokedSession{extended}, load(time.Time{}, time.Time{})); diff != "" {
		t.Errorf("left after pruning (-want, +got):\n%s", diff)
	}
}

// auditLog is the log testAudit* read: five events labelled e1..e5 by
// request id, and instants before, between e2 and e3, and after them.
type auditLog struct{ before, mid, after time.Time }

func seedAudit(t *testing.T, s keystore.Store) auditLog {
	t.Helper()
	ctx := context.Background()
	appendAll := func(events ...keystore.AuditEvent) {
		t.Helper()
		for _, e := range events {
			if err := s.AppendAudit(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	var l auditLog
	l.before = time.Now().Add(-time.Second)
	appendAll(
		keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyCreated, Target: "key_1", Owner: "org_1", RequestID: "e1",
			Details: map[string]any{"name": "CI", "scopes": []string{"a", "b"}, "grace_seconds": 60}},
		keystore.AuditEvent{Actor: "user_2", Action: keystore.ActionKeyRevoked, Target: "key_1", Owner: "org_1", RequestID: "e2"},
	)
	// The store stamps events with its clock (PostgreSQL's, for pgstore):
	// leave a margin around the instant the filters split at.
	time.Sleep(20 * time.Millisecond)
	l.mid = time.Now()
	time.Sleep(20 * time.Millisecond)
	appendAll(
		keystore.AuditEvent{Actor: "operator", Action: keystore.ActionKeyCreated, Target: "key_2", Owner: "user_9", RequestID: "e3"},
		keystore.AuditEvent{Actor: "clerk-webhook", Action: keystore.ActionSessionRevoked, Target: "sess_1", RequestID: "e4"},
		keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyRolled, Target: "key_3", Owner: "org_2", RequestID: "e5"},
	)
	l.after = time.Now().Add(time.Second)
	return l
}

// testAuditFilters reads the log through every filter, whole and in pages.
func testAuditFilters(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	l := seedAudit(t, s)
	for _, tc := range []struct {
		name string
		f    keystore.AuditFilter
		want []string
	}{
		{"all", keystore.AuditFilter{}, []string{"e5", "e4", "e3", "e2", "e1"}},
		{"owner", keystore.AuditFilter{Owners: []string{"org_1"}}, []string{"e2", "e1"}},
		{"owners", keystore.AuditFilter{Owners: []string{"org_1", "org_2"}}, []string{"e5", "e2", "e1"}},
		{"no owner", keystore.AuditFilter{Owners: []string{""}}, []string{"e4"}},
		{"actor", keystore.AuditFilter{Actor: "user_1"}, []string{"e5", "e1"}},
		{"action", keystore.AuditFilter{Action: keystore.ActionKeyCreated}, []string{"e3", "e1"}},
		{"target", keystore.AuditFilter{Target: "key_1"}, []string{"e2", "e1"}},
		{"since", keystore.AuditFilter{Since: l.mid}, []string{"e5", "e4", "e3"}},
		{"until", keystore.AuditFilter{Until: l.mid}, []string{"e2", "e1"}},
		{"since and until", keystore.AuditFilter{Since: l.before, Until: l.after}, []string{"e5", "e4", "e3", "e2", "e1"}},
		{"since, owner", keystore.AuditFilter{Since: l.mid, Owners: []string{"org_1", "org_2"}}, []string{"e5"}},
		{"actor and action", keystore.AuditFilter{Actor: "user_1", Action: keystore.ActionKeyCreated}, []string{"e1"}},
		{"no match", keystore.AuditFilter{Actor: "nobody"}, []string{}},
	} {
		for _, limit := range []int{0, 1, 2} {
			f := tc.f
			f.Limit = limit
			got := []string{}
			for pages := 0; ; pages++ {
				page, next, err := s.ListAudit(ctx, f)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if limit > 0 && len(page) > limit {
					t.Errorf("%s: page of %d events, limit %d", tc.name, len(page), limit)
				}
				got = append(got, auditIDs(page)...)
				if next == "" || pages > 10 {
					break
				}
				f.Cursor = next
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s, limit %d (-want, +got):\n%s", tc.name, limit, diff)
			}
		}
	}
}

// testAuditEvents checks what an event reads back as, and the exact bounds
// of the time filters and the cursor.
func testAuditEvents(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	l := seedAudit(t, s)
	events, _, err := s.ListAudit(ctx, keystore.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 5 {
		t.Fatalf("%d events, want 5", len(events))
	}
	for i, e := range events {
		if e.At.Before(l.before) || e.At.After(l.after) || (i > 0 && e.ID >= events[i-1].ID) {
			t.Errorf("event %d: id %d at %v, want decreasing ids between %v and %v", i, e.ID, e.At, l.before, l.after)
		}
	}
	// Details come back as JSON decodes them: numbers as float64, lists as []any.
	e1 := events[4]
	want := keystore.AuditEvent{ID: e1.ID, At: e1.At, Actor: "user_1", Action: keystore.ActionKeyCreated, Target: "key_1", Owner: "org_1", RequestID: "e1",
		Details: map[string]any{"name": "CI", "scopes": []any{"a", "b"}, "grace_seconds": float64(60)}}
	if diff := cmp.Diff(want, e1); diff != "" {
		t.Errorf("event e1 (-want, +got):\n%s", diff)
	}
	if e2 := events[3]; len(e2.Details) != 0 {
		t.Errorf("event without details read back with %v", e2.Details)
	}
	// Since is inclusive and Until exclusive, to the stored microsecond.
	e3 := events[2]
	for _, tc := range []struct {
		f    keystore.AuditFilter
		want []string
	}{
		{keystore.AuditFilter{Since: e3.At}, []string{"e5", "e4", "e3"}},
		{keystore.AuditFilter{Until: e3.At}, []string{"e2", "e1"}},
		{keystore.AuditFilter{Since: e3.At, Until: e3.At.Add(us)}, []string{"e3"}},
	} {
		got, _, err := s.ListAudit(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, auditIDs(got)); diff != "" {
			t.Errorf("since %v, until %v (-want, +got):\n%s", tc.f.Since, tc.f.Until, diff)
		}
	}

	for _, c := range []string{"abc", "0", "-1"} {
		if _, _, err := s.ListAudit(ctx, keystore.AuditFilter{Cursor: c}); !errors.Is(err, keystore.ErrInvalid) {
			t.Errorf("ListAudit(cursor %q) = %v, want ErrInvalid", c, err)
		}
	}
}

func testDeliveries(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	check := func(id string, keep time.Duration, want bool) {
		t.Helper()
		if got, err := s.FirstDelivery(ctx, id, keep); err != nil || got != want {
			t.Errorf("FirstDelivery(%q, %v) = %v, %v; want %v", id, keep, got, err, want)
		}
	}
	check("msg_1", time.Hour, true)
	check("msg_1", time.Hour, false) // replay
	check("msg_2", time.Hour, true)
	check("msg_1", time.Hour, false)
	// A forgotten delivery (its processing failed) is new again.
	if err := s.ForgetDelivery(ctx, "msg_2"); err != nil {
		t.Fatal(err)
	}
	check("msg_2", time.Hour, true)
	check("msg_2", time.Hour, false)
	// Ids older than keep are forgotten, so the table does not grow forever.
	// keep is long enough that msg_3 itself survives a slow machine.
	time.Sleep(1200 * time.Millisecond)
	check("msg_3", time.Second, true)
	check("msg_1", time.Hour, true)
	check("msg_3", time.Hour, false)
}
