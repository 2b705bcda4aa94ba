package admin_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/admin/keypolicy"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/keystore"
)

// Lists and reads of keys carry their usage totals (24 hours, 30 days) and
// last use; unused_for keeps the keys unused that long, with the other
// filters, for the operator and for a user.
func TestKeyUsageAndUnusedFilter(t *testing.T) {
	e := newEnv(t)
	create := func(name string) string {
		r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": name, "scopes": []string{}, "user_id": "user_a"})
		e.MustStatus(r, 201)
		return r.Str("id")
	}
	busy, idle, fresh := create("busy"), create("idle"), create("fresh")
	now := time.Now()
	hour := now.UTC().Truncate(time.Hour)
	long := now.Add(-100 * 24 * time.Hour)
	if err := e.Store.RecordUsage(context.Background(), []keystore.Usage{
		{KeyID: busy, Hour: hour, Count: 5, LastUsed: now.Add(-time.Minute)},
		{KeyID: busy, Hour: hour.Add(-48 * time.Hour), Count: 7, LastUsed: now.Add(-48 * time.Hour)},
		{KeyID: idle, Hour: long.UTC().Truncate(time.Hour), Count: 3, LastUsed: long},
	}); err != nil {
		t.Fatal(err)
	}
	totals := func(k map[string]any) map[string]any { m, _ := k["usage_totals"].(map[string]any); return m }
	r := e.Do("GET", "/v1/keys?user_id=user_a", admintest.OperatorToken, nil)
	e.MustStatus(r, 200)
	got := map[string]map[string]any{}
	for _, k := range r.Body["keys"].([]any) {
		m := k.(map[string]any)
		got[m["id"].(string)] = totals(m)
		if m["id"] != fresh && m["last_used_at"] == nil {
			t.Errorf("%s: no last_used_at", m["name"])
		}
	}
	want := map[string]map[string]any{
		busy:  {"last_24h": 5.0, "last_30d": 12.0},
		idle:  {"last_24h": 0.0, "last_30d": 0.0},
		fresh: {"last_24h": 0.0, "last_30d": 0.0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("usage totals in the list (-want, +got):\n%s", diff)
	}
	r = e.Do("GET", "/v1/keys/"+busy, admintest.OperatorToken, nil)
	e.MustStatus(r, 200)
	if diff := cmp.Diff(want[busy], totals(r.Body)); diff != "" {
		t.Errorf("usage totals of a read (-want, +got):\n%s", diff)
	}

	listed := func(path, bearer string) []string { t.Helper(); return e.listedKeys(path, bearer) }
	user := e.Token("user_a", "", "")
	for _, tc := range []struct {
		path, bearer string
		want         []string
	}{
		{"/v1/keys?unused_for=90d", admintest.OperatorToken, []string{idle}},
		{"/v1/keys?unused_for=90d&user_id=user_a&revoked=false&limit=1", admintest.OperatorToken, []string{idle}},
		{"/v1/keys?unused_for=90d&revoked=true", admintest.OperatorToken, nil},
		{"/v1/keys?unused_for=1h", admintest.OperatorToken, []string{idle}}, // busy: a minute ago; fresh: created now
		{"/v1/keys?unused_for=24h", admintest.OperatorToken, []string{idle}},
		{"/v1/keys?unused_for=90d", user, []string{idle}},
		{"/v1/keys?owner=me&unused_for=200d", user, nil},
	} {
		if diff := cmp.Diff(tc.want, listed(tc.path, tc.bearer)); diff != "" {
			t.Errorf("%s (-want, +got):\n%s", tc.path, diff)
		}
	}
}

// listedKeys is the ids of the keys GET path answers with (200 required),
// in order.
func (e *env) listedKeys(path, bearer string) []string {
	e.T.Helper()
	r := e.Do("GET", path, bearer, nil)
	e.MustStatus(r, 200)
	var ids []string
	for _, k := range r.Body["keys"].([]any) {
		ids = append(ids, k.(map[string]any)["id"].(string))
	}
	return ids
}

// expires_within keeps the keys expiring that soon, with the other filters,
// for the operator and for a user; bad values are 400 naming it.
func TestExpiresWithinFilter(t *testing.T) {
	e := newEnv(t)
	create := func(user string, in time.Duration) string {
		body := map[string]any{"name": "k", "scopes": []string{}, "user_id": user}
		if in > 0 {
			body["expires_at"] = time.Now().Add(in).UTC().Format(time.RFC3339)
		}
		r := e.Do("POST", "/v1/keys", admintest.OperatorToken, body)
		e.MustStatus(r, 201)
		return r.Str("id")
	}
	const day = 24 * time.Hour
	soon, later, _, theirs := create("user_a", 2*day), create("user_a", 20*day), create("user_a", 0), create("user_b", day)
	listed := func(path, bearer string) []string { t.Helper(); return e.listedKeys(path, bearer) }
	user := e.Token("user_a", "", "")
	for _, tc := range []struct {
		path, bearer string
		want         []string
	}{
		{"/v1/keys?expires_within=7d", admintest.OperatorToken, []string{theirs, soon}},
		{"/v1/keys?expires_within=30d&user_id=user_a&limit=1", admintest.OperatorToken, []string{later}},
		{"/v1/keys?expires_within=30d", user, []string{later, soon}},
		{"/v1/keys?expires_within=1h", user, nil},
		{"/v1/keys?expires_within=7d&revoked=true", admintest.OperatorToken, nil},
	} {
		if diff := cmp.Diff(tc.want, listed(tc.path, tc.bearer)); diff != "" {
			t.Errorf("%s (-want, +got):\n%s", tc.path, diff)
		}
	}
	for _, v := range []string{"soon", "0d", "-3h"} {
		r := e.Do("GET", "/v1/keys?expires_within="+v, admintest.OperatorToken, nil)
		if r.Status != 400 || r.ErrorField() != "expires_within" {
			t.Errorf("expires_within=%s: %d %s, want 400 naming expires_within", v, r.Status, r.Raw)
		}
	}
}

// Under --max-key-lifetime a key created without an expiry expires that
// long after its creation, one asked to live longer is refused (400 naming
// expires_at), and a roll keeps the new key within it.
func TestMaxKeyLifetimeAPI(t *testing.T) {
	const max = 30 * 24 * time.Hour
	e := newEnvWith(t, func(c *adminsvc.Config) {
		c.MaxKeyLifetime = keystore.KeyLifetimes{Default: keystore.MaxLifetime(max),
			Orgs: map[string]keystore.MaxLifetime{"org_acme": keystore.MaxLifetime(7 * 24 * time.Hour)}}
	})
	r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "CI", "scopes": []string{}, "user_id": "user_a"})
	e.MustStatus(r, 201)
	created, _ := time.Parse(time.RFC3339Nano, r.Str("created_at"))
	expires, _ := time.Parse(time.RFC3339Nano, r.Str("expires_at"))
	if d := expires.Sub(created); d < max-time.Second || d > max+time.Second {
		t.Errorf("expires %v after creation, want %v", d, max)
	}
	id := r.Str("id")
	r = e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "CI", "scopes": []string{}, "user_id": "user_a",
		"expires_at": time.Now().Add(max + time.Hour).UTC().Format(time.RFC3339)})
	if r.Status != 400 || r.ErrorCode() != "INVALID_REQUEST" || r.ErrorField() != "expires_at" {
		t.Errorf("expiry past the maximum: %d %s", r.Status, r.Raw)
	}
	r = e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "CI", "scopes": []string{}, "user_id": "user_a",
		"expires_at": time.Now().Add(max - time.Hour).UTC().Format(time.RFC3339)})
	e.MustStatus(r, 201)
	// An organisation's own maximum replaces the default for its keys.
	r = e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "deploy", "scopes": []string{}, "org_id": "org_acme"})
	e.MustStatus(r, 201)
	created, _ = time.Parse(time.RFC3339Nano, r.Str("created_at"))
	if orgExpires, _ := time.Parse(time.RFC3339Nano, r.Str("expires_at")); orgExpires.Sub(created).Round(time.Hour) != 7*24*time.Hour {
		t.Errorf("organisation key expires %v after creation, want 7 days", orgExpires.Sub(created))
	}
	r = e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "deploy", "scopes": []string{}, "org_id": "org_acme",
		"expires_at": time.Now().Add(8 * 24 * time.Hour).UTC().Format(time.RFC3339)})
	if r.Status != 400 || r.ErrorField() != "expires_at" {
		t.Errorf("expiry past the organisation's maximum: %d %s", r.Status, r.Raw)
	}
	r = e.Do("POST", "/v1/keys/"+id+"/roll", admintest.OperatorToken, nil)
	e.MustStatus(r, 201)
	if rolled, _ := time.Parse(time.RFC3339Nano, r.Str("expires_at")); !rolled.Equal(expires) {
		t.Errorf("rolled key expires %v, want its predecessor's %v", rolled, expires)
	}
}

// odin admin with the unused-keys policy on runs the job: a key unused
// for the (here tiny) period is revoked by policy:unused-keys with the
// reason expired-by-policy, and the revoke reaches Redis as any revoke.
func TestUnusedKeysJobRuns(t *testing.T) {
	e := newEnvWith(t, func(c *adminsvc.Config) {
		c.UnusedKeys = keypolicy.Options{UnusedFor: time.Millisecond, Interval: 20 * time.Millisecond}
	})
	r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "idle", "scopes": []string{}, "user_id": "user_a"})
	e.MustStatus(r, 201)
	id := r.Str("id")
	deadline := time.Now().Add(20 * time.Second) // a bound on the wait, not a measured time
	for {
		r = e.Do("GET", "/v1/audit-log?action=key.revoked&actor="+keypolicy.Actor, admintest.OperatorToken, nil)
		e.MustStatus(r, 200)
		if events, _ := r.Body["events"].([]any); len(events) > 0 {
			ev := events[0].(map[string]any)
			details, _ := ev["details"].(map[string]any)
			if ev["target"] != id || details["reason"] != keystore.RevokeReasonExpiredByPolicy {
				t.Fatalf("policy revoke event: %v", ev)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the unused-keys job revoked nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r = e.Do("GET", "/v1/keys/"+id, admintest.OperatorToken, nil)
	e.MustStatus(r, 200)
	if r.Body["revoked"] != true {
		t.Errorf("key not revoked: %s", r.Raw)
	}
}
