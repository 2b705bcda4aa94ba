package webhooks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/admin/webhooks"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// Every event type reaches the endpoint, signed, with its payload, and
// none holds the key or its hash.
func TestEveryEventDelivered(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		rcv := newReceiver(t)
		clk := newClock()
		w := newWorker(t, webhooks.Options{Store: s, Endpoints: []webhooks.Endpoint{rcv.endpoint("dashboard")},
			Now: clk.Now, ExpiringWithin: 7 * 24 * time.Hour})
		m := manager(s)
		user := keystore.Actor{ID: "user_1"}
		expires := time.Now().Add(72 * time.Hour).UTC().Truncate(time.Second)
		plain, k, err := m.Create(ctx, user, keystore.NewKey{UserID: "user_1", Name: "CI", Scopes: []string{"scans:read"}, Tier: "pro", ExpiresAt: expires})
		if err != nil {
			t.Fatal(err)
		}
		_, old, rolled, err := m.Roll(ctx, user, k.ID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Revoke(ctx, user, rolled.ID); err != nil {
			t.Fatal(err)
		}
		_, k2, err := m.Create(ctx, user, keystore.NewKey{OrgID: "org_1", Name: "deploy"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Revoke(ctx, keystore.Actor{ID: "operator"}, k2.ID); err != nil {
			t.Fatal(err)
		}
		_, k3, err := m.Create(ctx, user, keystore.NewKey{UserID: "user_1", Name: "leaky"})
		if err != nil {
			t.Fatal(err)
		}
		leaked := &keystore.AuditEvent{Actor: "github-secret-scanning", Action: keystore.ActionKeyRevoked, Details: map[string]any{"reason": "leaked"}}
		if _, err := keystore.RevokeKey(ctx, s, k3.ID, time.Now(), leaked); err != nil {
			t.Fatal(err)
		}
		_, k4, err := m.Create(ctx, user, keystore.NewKey{UserID: "user_1", Name: "soon", ExpiresAt: expires})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.RevokeSession(ctx, keystore.Actor{ID: "clerk-webhook"}, "sess_1", "user logged out"); err != nil {
			t.Fatal(err)
		}
		if n, err := w.ScanExpiring(ctx); err != nil || n != 1 { // the rolled key is in its grace, k4 expires in 3 days
			t.Fatalf("ScanExpiring = %d, %v; want 1 event (k4)", n, err)
		}
		drain(t, w)

		got := rcv.bodies()
		count := map[string]int{}
		for typ, bs := range got {
			count[typ] = len(bs)
		}
		want := map[string]int{"key.created": 4, "key.rolled": 1, "key.revoked": 3, "key.expiring": 1, "session.revoked": 1}
		if diff := cmp.Diff(want, count); diff != "" {
			t.Fatalf("events received (-want, +got):\n%s", diff)
		}
		for _, bs := range got {
			for _, b := range bs {
				raw, _ := json.Marshal(b)
				if strings.Contains(string(raw), plain[8:]) || strings.Contains(string(raw), "hash") {
					t.Errorf("an event shows the key or its hash: %s", raw)
				}
				if _, err := time.Parse(time.RFC3339Nano, b["timestamp"].(string)); err != nil {
					t.Errorf("timestamp: %v", err)
				}
			}
		}
		data := func(b map[string]any) map[string]any { return b["data"].(map[string]any) }
		var created map[string]any // events arrive in any order
		for _, b := range got["key.created"] {
			if k2 := data(b)["key"].(map[string]any); k2["id"] == k.ID {
				created = k2
			}
		}
		wantKey := map[string]any{"id": k.ID, "owner": "user_1", "user_id": "user_1", "name": "CI", "hint": k.Hint,
			"scopes": []any{"scans:read"}, "tier": "pro", "created_at": k.CreatedAt.Format(time.RFC3339Nano),
			"expires_at": expires.Format(time.RFC3339Nano)}
		if diff := cmp.Diff(wantKey, created); diff != "" {
			t.Errorf("key.created data.key (-want, +got):\n%s", diff)
		}
		roll := data(got["key.rolled"][0])
		if roll["key"].(map[string]any)["replaced_by"] != rolled.ID || roll["successor"].(map[string]any)["id"] != rolled.ID ||
			roll["key"].(map[string]any)["expires_at"] != old.ExpiresAt.Format(time.RFC3339Nano) {
			t.Errorf("key.rolled data = %v; want key %s replaced by %s, expiring at %s", roll, old.ID, rolled.ID, old.ExpiresAt)
		}
		reasons := map[string]string{}
		for _, b := range got["key.revoked"] {
			d := data(b)
			reasons[d["key"].(map[string]any)["id"].(string)] = d["reason"].(string)
			if d["key"].(map[string]any)["revoked_at"] == nil {
				t.Errorf("key.revoked without revoked_at: %v", d)
			}
		}
		if diff := cmp.Diff(map[string]string{rolled.ID: "user", k2.ID: "operator", k3.ID: "leaked"}, reasons); diff != "" {
			t.Errorf("revoke reasons (-want, +got):\n%s", diff)
		}
		if id := data(got["key.expiring"][0])["key"].(map[string]any)["id"]; id != k4.ID {
			t.Errorf("key.expiring is about %v, want %s", id, k4.ID)
		}
		sess := data(got["session.revoked"][0])["session"].(map[string]any)
		if sess["id"] != "sess_1" || sess["reason"] != "user logged out" {
			t.Errorf("session.revoked data = %v", sess)
		}
		if n := rcv.duplicates(); n != 0 {
			t.Errorf("%d duplicate deliveries, want none", n)
		}
		for _, e := range listAll(t, s, keystore.OutboxFilter{}) {
			if e.Status != keystore.OutboxDelivered || e.Attempts != 1 {
				t.Errorf("event %d (%s): %s after %d attempts; want delivered after 1", e.ID, e.Type, e.Status, e.Attempts)
			}
		}
	})
}

// A failing endpoint is retried on the schedule, not before; a success
// delivers the event, which the status shows.
func TestRetryBackoff(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		rcv := newReceiver(t)
		rcv.failFirst = 2
		clk := newClock()
		reg := prometheus.NewRegistry()
		w := newWorker(t, webhooks.Options{Store: s, Endpoints: []webhooks.Endpoint{rcv.endpoint("dashboard")}, Now: clk.Now, Registerer: reg})
		if _, _, err := manager(s).Create(ctx, keystore.Actor{ID: "user_1"}, keystore.NewKey{UserID: "user_1", Name: "CI"}); err != nil {
			t.Fatal(err)
		}
		step := func(want int) {
			t.Helper()
			n, err := w.Step(ctx)
			if err != nil || n != want {
				t.Fatalf("Step = %d, %v; want %d attempts", n, err, want)
			}
		}
		step(1) // fails: next in 5s
		ev := listAll(t, s, keystore.OutboxFilter{})[0]
		if ev.Status != keystore.OutboxPending || ev.Attempts != 1 || ev.LastStatus != 500 || ev.LastError != "dashboard: HTTP 500" {
			t.Fatalf("after a 500: %+v", ev)
		}
		if want := clk.Now().Add(5 * time.Second); !ev.NextAttemptAt.Equal(want.UTC().Truncate(time.Microsecond)) {
			t.Errorf("next attempt at %v, want %v", ev.NextAttemptAt, want)
		}
		clk.Add(4 * time.Second)
		step(0)
		clk.Add(time.Second)
		step(1) // fails: next in 5m
		clk.Add(5*time.Minute - time.Second)
		step(0)
		clk.Add(time.Second)
		step(1) // delivered
		clk.Add(time.Hour)
		step(0)
		ev = listAll(t, s, keystore.OutboxFilter{})[0]
		if ev.Status != keystore.OutboxDelivered || ev.Attempts != 3 || len(rcv.bodies()["key.created"]) != 1 {
			t.Errorf("after two failures and a success: %+v", ev)
		}
		for _, m := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"odin_webhook_events_enqueued_total", []string{"key.created"}, 1},
			{"odin_webhook_attempts_total", []string{"http_error", "key.created"}, 2},
			{"odin_webhook_attempts_total", []string{"success", "key.created"}, 1},
			{"odin_webhook_events_total", []string{"delivered", "key.created"}, 1},
			{"odin_webhook_events_total", []string{"failed", "key.created"}, 0},
		} {
			if got := metricValue(t, reg, m.name, m.labels...); got != m.want {
				t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
			}
		}
	})
}

// After the last attempt an event is failed and listed so; a retry gives
// it one more attempt.
func TestFailedAfterCap(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		rcv := newReceiver(t)
		rcv.failFirst = 1000
		clk := newClock()
		w := newWorker(t, webhooks.Options{Store: s, Endpoints: []webhooks.Endpoint{rcv.endpoint("dashboard")}, Now: clk.Now, MaxAttempts: 3})
		if _, err := manager(s).RevokeSession(ctx, keystore.Actor{ID: "operator"}, "sess_9", ""); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			drain(t, w)
			clk.Add(24 * time.Hour)
		}
		failed := listAll(t, s, keystore.OutboxFilter{Status: keystore.OutboxFailed})
		if len(failed) != 1 || failed[0].Attempts != 3 || failed[0].Type != keystore.ActionSessionRevoked {
			t.Fatalf("failed events: %+v; want the session.revoked event after 3 attempts", failed)
		}
		if pending := listAll(t, s, keystore.OutboxFilter{Status: keystore.OutboxPending}); len(pending) != 0 {
			t.Errorf("pending: %+v", pending)
		}
		if _, err := s.RetryOutbox(ctx, failed[0].ID, clk.Now()); err != nil {
			t.Fatal(err)
		}
		rcv.mu.Lock()
		rcv.failFirst = 0
		rcv.mu.Unlock()
		drain(t, w)
		ev := listAll(t, s, keystore.OutboxFilter{})[0]
		if ev.Status != keystore.OutboxDelivered || ev.Attempts != 4 {
			t.Errorf("after a retry: %+v", ev)
		}
		if _, err := s.RetryOutbox(ctx, ev.ID, clk.Now()); !errors.Is(err, keystore.ErrConflict) {
			t.Errorf("retrying a delivered event: %v, want ErrConflict", err)
		}
		if _, err := s.RetryOutbox(ctx, 999999, clk.Now()); !errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("retrying no event: %v, want ErrNotFound", err)
		}
	})
}

// A change rolled back writes no event; the audit event and the webhook
// event of a committed change go together.
func TestRolledBackChangeEmitsNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		_, k, err := manager(s).Create(ctx, keystore.Actor{ID: "user_1"}, keystore.NewKey{UserID: "user_1", Name: "CI"})
		if err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		err = s.UpdateKey(ctx, k.ID, func(ctx context.Context, tx keystore.KeyTx, cur *keystore.Key) error {
			if _, err := tx.SetRevokedAt(ctx, time.Now()); err != nil {
				return err
			}
			if err := tx.AppendAudit(ctx, &keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyRevoked}, cur.ID, cur.Owner()); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("UpdateKey = %v, want boom", err)
		}
		events := listAll(t, s, keystore.OutboxFilter{})
		if len(events) != 1 || events[0].Type != keystore.ActionKeyCreated {
			t.Errorf("outbox after a rolled-back revoke: %+v; want the key.created event alone", events)
		}
		// An audit event written on its own sends nothing.
		if err := s.AppendAudit(ctx, keystore.AuditEvent{Actor: "x", Action: keystore.ActionKeyRevoked, Target: "key_none"}); err != nil {
			t.Fatal(err)
		}
		if n := len(listAll(t, s, keystore.OutboxFilter{})); n != 1 {
			t.Errorf("%d events, want 1", n)
		}
	})
}

// A worker that stops mid-way loses nothing: what it claimed and did not
// finish goes out once its lease has passed, through another worker.
func TestRestartMidway(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		rcv := newReceiver(t)
		clk := newClock()
		m := manager(s)
		for i := range 10 {
			if _, _, err := m.Create(ctx, keystore.Actor{ID: "user_1"}, keystore.NewKey{UserID: "user_1", Name: fmt.Sprint("k", i)}); err != nil {
				t.Fatal(err)
			}
		}
		opts := webhooks.Options{Store: s, Endpoints: []webhooks.Endpoint{rcv.endpoint("dashboard")}, Now: clk.Now, Concurrency: 3, Timeout: time.Second}
		first := newWorker(t, opts)
		if _, err := first.Step(ctx); err != nil { // three delivered
			t.Fatal(err)
		}
		// The first worker dies holding two more events: claimed, never finished.
		held, err := s.ClaimOutbox(ctx, clk.Now(), 31*time.Second, 2)
		if err != nil || len(held) != 2 {
			t.Fatalf("claim = %d, %v", len(held), err)
		}
		second := newWorker(t, opts)
		drain(t, second)
		if n := len(rcv.bodies()["key.created"]); n != 8 {
			t.Fatalf("%d delivered while the dead worker's lease holds 2; want 8", n)
		}
		clk.Add(31 * time.Second)
		drain(t, second)
		if n := len(rcv.bodies()["key.created"]); n != 10 {
			t.Errorf("%d delivered after the lease passed, want 10", n)
		}
		// The dead worker's late answer no longer counts.
		if ok, err := s.FinishAttempt(ctx, held[0].ID, held[0].Lease, keystore.AttemptResult{Status: keystore.OutboxFailed, At: clk.Now()}); err != nil || ok {
			t.Errorf("FinishAttempt with a lost lease = %v, %v; want false", ok, err)
		}
		if n := rcv.duplicates(); n != 0 {
			t.Errorf("%d duplicates, want none", n)
		}
	})
}

// Two workers on one PostgreSQL never deliver one attempt both: each event
// reaches the endpoint once, and never twice at the same time.
func TestTwoWorkersOnePostgres(t *testing.T) {
	s := testenv.OpenStore(t, testenv.Postgres(t), pgstore.Options{})
	ctx := context.Background()
	rcv := newReceiver(t)
	m := manager(s)
	const events = 40
	for i := range events {
		if _, _, err := m.Create(ctx, keystore.Actor{ID: "user_1"}, keystore.NewKey{UserID: "user_1", Name: fmt.Sprint("k", i)}); err != nil {
			t.Fatal(err)
		}
	}
	other := testenv.OpenStore(t, s.Pool().Config().ConnString(), pgstore.Options{}) // a second replica's pool
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, st := range []*pgstore.Store{s, other} {
		w := newWorker(t, webhooks.Options{Store: st, Endpoints: []webhooks.Endpoint{rcv.endpoint("dashboard")}, PollInterval: 5 * time.Millisecond, Concurrency: 3})
		wg.Go(func() { w.Run(runCtx) })
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(rcv.bodies()["key.created"]) < events && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	wg.Wait()
	if n := len(rcv.bodies()["key.created"]); n != events {
		t.Errorf("%d delivered, want %d", n, events)
	}
	if n := rcv.duplicates(); n != 0 {
		t.Errorf("%d events delivered twice", n)
	}
	if rcv.overlap != 0 {
		t.Errorf("%d events were being delivered by both workers at once", rcv.overlap)
	}
}

// key.expiring is sent once per key and expiry, only for keys neither
// revoked nor rolled, and only within the notice.
func TestExpiringOnce(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		clk := newClock()
		rcv := newReceiver(t)
		w := newWorker(t, webhooks.Options{Store: s, Endpoints: []webhooks.Endpoint{rcv.endpoint("dashboard", keystore.EventKeyExpiring)},
			Now: clk.Now, ExpiringWithin: 7 * 24 * time.Hour})
		m := manager(s)
		by := keystore.Actor{ID: "user_1"}
		create := func(name string, in time.Duration) *keystore.Key {
			_, k, err := m.Create(ctx, by, keystore.NewKey{UserID: "user_1", Name: name, ExpiresAt: time.Now().Add(in)})
			if err != nil {
				t.Fatal(err)
			}
			return k
		}
		soon := create("soon", 3*24*time.Hour)
		create("later", 10*24*time.Hour)
		revoked := create("revoked", 2*24*time.Hour)
		if _, err := m.Revoke(ctx, by, revoked.ID); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			n, err := w.ScanExpiring(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[int]int{0: 1}[i]; n != want {
				t.Errorf("scan %d wrote %d events, want %d", i, n, want)
			}
		}
		drain(t, w)
		got := rcv.bodies()
		if len(got) != 1 || len(got["key.expiring"]) != 1 {
			t.Fatalf("received %v; want one key.expiring (the endpoint takes only that type)", got)
		}
		if id := got["key.expiring"][0]["data"].(map[string]any)["key"].(map[string]any)["id"]; id != soon.ID {
			t.Errorf("key.expiring about %v, want %s", id, soon.ID)
		}
		// The other events were skipped: no endpoint takes them.
		if skipped := listAll(t, s, keystore.OutboxFilter{Status: keystore.OutboxSkipped}); len(skipped) != 4 {
			t.Errorf("%d skipped events, want 4 (3 created, 1 revoked)", len(skipped))
		}
		clk.Add(6 * 24 * time.Hour) // "later" is now within the notice
		if n, err := w.ScanExpiring(ctx); err != nil || n != 1 {
			t.Errorf("scan six days on = %d, %v; want 1 (later)", n, err)
		}
	})
}

// Endpoint settings are checked, and errors never show a secret.
func TestValidateEndpoints(t *testing.T) {
	for _, tc := range []struct {
		name string
		json string
		want string
	}{
		{"ok", `[{"name":"a","url":"https://h/x","secret":"` + testSecret + `","types":["key.created"]}]`, ""},
		{"bad secret", `[{"name":"a","url":"https://h/x","secret":"whsec_c2hvcnQ="}]`, "secret"},
		{"not whsec", `[{"name":"a","url":"https://h/x","secret":"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]`, "secret"},
		{"bad url", `[{"name":"a","url":"ftp://h/x","secret":"` + testSecret + `"}]`, "url"},
		{"bad type", `[{"name":"a","url":"https://h/x","secret":"` + testSecret + `","types":["key.eaten"]}]`, "types"},
		{"twice", `[{"name":"a","url":"https://h/x","secret":"` + testSecret + `"},{"name":"a","url":"https://h/y","secret":"` + testSecret + `"}]`, "twice"},
		{"unknown field", `[{"name":"a","url":"https://h/x","secret":"` + testSecret + `","sekret":1}]`, "JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := webhooks.ParseEndpoints([]byte(tc.json))
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one about %s", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"):
				t.Fatalf("the error shows the secret: %v", err)
			}
		})
	}
}

// A scan writes an event for every expiring key, past a batch, and the
// next scan finds none left.
func TestExpiringManyKeys(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		const keys = 250
		for i := range keys {
			plain, err := keystore.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			n := keystore.NewKey{UserID: "user_1", Name: fmt.Sprint("k", i), ExpiresAt: time.Now().Add(48*time.Hour + time.Duration(i)*time.Second)}
			if _, err := s.CreateKey(ctx, n, keystore.HashKey(plain), keystore.KeyHint(plain), nil); err != nil {
				t.Fatal(err)
			}
		}
		w := newWorker(t, webhooks.Options{Store: s, Now: newClock().Now, ExpiringWithin: 7 * 24 * time.Hour})
		for i, want := range []int{keys, 0} {
			if n, err := w.ScanExpiring(ctx); err != nil || n != want {
				t.Errorf("scan %d = %d, %v; want %d events", i, n, err, want)
			}
		}
	})
}
