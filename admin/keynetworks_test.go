package admin_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/denial/denialtest"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/keystore"
)

// allowedCIDRs is a key's allowed_cidrs as an answer shows it: nil when
// absent (any network).
func allowedCIDRs(t *testing.T, k map[string]any) []string {
	t.Helper()
	v, ok := k["allowed_cidrs"]
	if !ok {
		return nil
	}
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		t.Errorf("allowed_cidrs is %#v: want absent or a non-empty list", v)
		return nil
	}
	out := make([]string, len(list))
	for i, x := range list {
		out[i], _ = x.(string)
	}
	return out
}

// canonical is a list as keys show it: keystore.ParseCIDRs's order and
// form.
func canonical(t *testing.T, list ...string) []string {
	t.Helper()
	ps, err := keystore.ParseCIDRs(list)
	if err != nil {
		t.Fatal(err)
	}
	return keystore.CIDRStrings(ps)
}

// listedCIDRs is the allowed_cidrs of key id in a page of GET /v1/keys.
func listedCIDRs(t *testing.T, r admintest.Response, id string) ([]string, bool) {
	t.Helper()
	keys, _ := r.Body["keys"].([]any)
	for _, k := range keys {
		if k, _ := k.(map[string]any); k["id"] == id {
			return allowedCIDRs(t, k), true
		}
	}
	return nil, false
}

// contractKeyNetworks gives keys network allowlists at creation (IPv4,
// IPv6, bare addresses, mixed) and by PATCH (set, narrow, widen, remove
// with null or []), as their owner, an organisation admin and the
// operator; shows them in reads, lists and the answers of changes;
// refuses bad entries naming the one at fault; audits each change; keeps
// the allowlist over a roll; and answers another user's key 404.
func contractKeyNetworks(t *testing.T, e *env, c contractClient) {
	op := admintest.OperatorToken
	hana, ivan := e.Token("user_net", "", ""), e.Token("user_net2", "", "")
	orgAdmin := e.Token("user_netadmin", "org_net", "admin")
	create := func(bearer string, body map[string]any) admintest.Response {
		t.Helper()
		body["scopes"] = []string{}
		return c.do(t, call{method: "POST", path: keysPath, bearer: bearer, body: body, status: 201})
	}

	for _, tc := range []struct {
		name   string
		bearer string
		cidrs  []string
		want   []string
	}{
		{"IPv4", hana, []string{"203.0.113.0/24"}, []string{"203.0.113.0/24"}},
		{"IPv6", hana, []string{"2001:db8::/32"}, []string{"2001:db8::/32"}},
		{"bare addresses", hana, []string{"198.51.100.7", "2001:db8::1"}, []string{"198.51.100.7/32", "2001:db8::1/128"}},
		{"mixed, repeated", orgAdmin, []string{"2001:db8::/32", "203.0.113.0/24", "198.51.100.7", "203.0.113.0/24"}, nil},
		{"by the operator", op, []string{"10.0.0.0/8", "fd00::/8"}, []string{"10.0.0.0/8", "fd00::/8"}},
	} {
		body := map[string]any{"name": tc.name, "allowed_cidrs": tc.cidrs}
		switch tc.bearer {
		case op:
			body["user_id"] = "user_net"
		case orgAdmin:
			body["org_id"] = "org_net"
		}
		r := create(tc.bearer, body)
		want := tc.want
		if want == nil {
			want = canonical(t, tc.cidrs...)
			if len(want) != 3 {
				t.Errorf("%s: canonical %v, want 3 networks", tc.name, want)
			}
		}
		if got := allowedCIDRs(t, r.Body); !cmp.Equal(got, want) {
			t.Errorf("%s: created with allowed_cidrs %v, want %v (%s)", tc.name, got, want, r.Raw)
		}
	}

	// Hana's key: read, listed, changed.
	r := create(hana, map[string]any{"name": "hana's", "allowed_cidrs": []string{"203.0.113.0/24", "2001:db8::/32"}})
	id := r.Str("id")
	path := keysPath + "/" + id
	both := canonical(t, "203.0.113.0/24", "2001:db8::/32")
	if got := allowedCIDRs(t, c.do(t, call{method: "GET", path: path, bearer: hana, status: 200}).Body); !cmp.Equal(got, both) {
		t.Errorf("read: allowed_cidrs %v, want %v", got, both)
	}
	if got, ok := listedCIDRs(t, c.do(t, call{method: "GET", path: keysPath, bearer: hana, status: 200}), id); !ok || !cmp.Equal(got, both) {
		t.Errorf("list: allowed_cidrs %v (listed %t), want %v", got, ok, both)
	}
	if got, ok := listedCIDRs(t, c.do(t, call{method: "GET", path: keysPath + "?user_id=user_net", bearer: op, status: 200}), id); !ok || !cmp.Equal(got, both) {
		t.Errorf("the operator's list: allowed_cidrs %v (listed %t), want %v", got, ok, both)
	}
	plain := create(hana, map[string]any{"name": "any network"})
	if _, ok := plain.Body["allowed_cidrs"]; ok {
		t.Errorf("a key without an allowlist shows allowed_cidrs: %s", plain.Raw)
	}
	if r := create(hana, map[string]any{"name": "empty list", "allowed_cidrs": []string{}}); r.Body["allowed_cidrs"] != nil {
		t.Errorf("allowed_cidrs [] at creation: %s", r.Raw)
	}

	// Beside a replica of an older release, which would accept the key
	// from anywhere, no key is given an allowlist: 409, naming the replica
	// to the operator only.
	olderReplica(t, e, func() {
		body := map[string]any{"name": "too early", "scopes": []string{}, "allowed_cidrs": []string{"203.0.113.0/24"}}
		r := c.do(t, call{method: "POST", path: keysPath, bearer: hana, body: body, status: 409})
		if r.ErrorCode() != "CONFLICT" || strings.Contains(r.Raw, "replica-old") || !strings.Contains(r.Raw, "upgrade") {
			t.Errorf("a user's key with an allowlist beside an older replica: %s", r.Raw)
		}
		body["user_id"] = "user_net"
		if r := c.do(t, call{method: "POST", path: keysPath, bearer: op, body: body, status: 409}); !strings.Contains(r.Raw, "replica-old") {
			t.Errorf("the operator's refusal does not name the replica: %s", r.Raw)
		}
		c.do(t, call{method: "PATCH", path: keysPath + "/" + plain.Str("id"), bearer: hana, body: map[string]any{"allowed_cidrs": []string{"203.0.113.0/24"}}, status: 409})
	})
	if k, err := e.Store.Key(context.Background(), plain.Str("id")); err != nil || k.AllowedCIDRs != nil {
		t.Errorf("the refused change was stored: %+v, %v", k, err)
	}

	// Bad entries: 400 naming the one at fault, on creation and change
	// alike; the document refuses those a schema can tell.
	many := make([]string, keystore.MaxAllowedCIDRs+1)
	for i := range many {
		many[i] = "10.0." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250)
	}
	for _, tc := range []struct {
		value  any
		field  string
		schema bool // the document refuses it too
	}{
		{[]string{"203.0.113.7/24"}, "allowed_cidrs[0]", false},
		{[]string{"203.0.113.0/24", "2001:db8::1/32"}, "allowed_cidrs[1]", false},
		{[]string{"198.51.100.0/33"}, "allowed_cidrs[0]", false},
		{[]string{"::ffff:203.0.113.0/120"}, "allowed_cidrs[0]", false},
		{[]string{"203.0.113.0/24", "not-a-network"}, "allowed_cidrs[1]", true},
		{[]string{"fe80::1%eth0"}, "allowed_cidrs[0]", true},
		{[]string{""}, "allowed_cidrs[0]", true},
		{many, "allowed_cidrs", true},
		{"203.0.113.0/24", "allowed_cidrs", true},
		{[]any{24}, "allowed_cidrs", true},
		{map[string]any{"cidr": "203.0.113.0/24"}, "allowed_cidrs", true},
	} {
		exp := expectation{requestInvalid: tc.schema}
		r := c.do(t, call{method: "PATCH", path: path, bearer: hana, body: map[string]any{"allowed_cidrs": tc.value}, status: 400, expect: exp})
		if r.ErrorCode() != "INVALID_REQUEST" || r.ErrorField() != tc.field {
			t.Errorf("PATCH allowed_cidrs %v: %s, want field %q", tc.value, r.Raw, tc.field)
		}
		r = c.do(t, call{method: "POST", path: keysPath, bearer: hana, body: map[string]any{"name": "bad", "scopes": []string{}, "allowed_cidrs": tc.value}, status: 400, expect: exp})
		if r.ErrorCode() != "INVALID_REQUEST" || r.ErrorField() != tc.field {
			t.Errorf("POST allowed_cidrs %v: %s, want field %q", tc.value, r.Raw, tc.field)
		}
	}
	if got := allowedCIDRs(t, c.do(t, call{method: "GET", path: path, bearer: hana, status: 200}).Body); !cmp.Equal(got, both) {
		t.Errorf("after the refused changes: allowed_cidrs %v, want %v", got, both)
	}

	// Narrow, widen, remove with null, set again, remove with []: each
	// answered with the key as changed. Without --admin-reverify a session
	// may widen.
	steps := []struct {
		value any
		want  []string
	}{
		{[]string{"203.0.113.0/25"}, []string{"203.0.113.0/25"}},
		{[]string{"203.0.113.0/24", "198.51.100.7"}, canonical(t, "203.0.113.0/24", "198.51.100.7")},
		{nil, nil},
		{[]string{"2001:db8::/48"}, []string{"2001:db8::/48"}},
		{[]string{}, nil},
	}
	for _, st := range steps {
		r := c.do(t, call{method: "PATCH", path: path, bearer: hana, body: map[string]any{"allowed_cidrs": st.value}, status: 200})
		if got := allowedCIDRs(t, r.Body); !cmp.Equal(got, st.want) {
			t.Errorf("PATCH allowed_cidrs %v: %v, want %v (%s)", st.value, got, st.want, r.Raw)
		}
	}
	events, _, err := e.Store.ListAudit(context.Background(), keystore.AuditFilter{Action: keystore.ActionKeyUpdated, Target: id})
	if err != nil {
		t.Fatal(err)
	}
	var changes []any
	for i := len(events) - 1; i >= 0; i-- {
		changes = append(changes, events[i].Details["changes"])
		if events[i].Actor != "user_net" {
			t.Errorf("key.updated by %q, want user_net", events[i].Actor)
		}
	}
	raw, _ := json.Marshal(changes)
	want := `[{"allowed_cidrs":{"from":["203.0.113.0/24","2001:db8::/32"],"to":["203.0.113.0/25"]}},` +
		`{"allowed_cidrs":{"from":["203.0.113.0/25"],"to":["198.51.100.7/32","203.0.113.0/24"]}},` +
		`{"allowed_cidrs":{"from":["198.51.100.7/32","203.0.113.0/24"],"to":null}},` +
		`{"allowed_cidrs":{"from":null,"to":["2001:db8::/48"]}},` +
		`{"allowed_cidrs":{"from":["2001:db8::/48"],"to":null}}]`
	if string(raw) != want {
		t.Errorf("key.updated changes:\n%s\nwant\n%s", raw, want)
	}
	created, _, err := e.Store.ListAudit(context.Background(), keystore.AuditFilter{Action: keystore.ActionKeyCreated, Target: id})
	if err != nil || len(created) != 1 {
		t.Fatalf("key.created events: %v %+v", err, created)
	}
	if raw, _ := json.Marshal(created[0].Details["allowed_cidrs"]); string(raw) != `["203.0.113.0/24","2001:db8::/32"]` {
		t.Errorf("key.created allowed_cidrs: %s", raw)
	}

	// Set again, with other fields; the same list again changes nothing.
	c.do(t, call{method: "PATCH", path: path, bearer: hana, body: map[string]any{"name": "hana's, narrowed", "allowed_cidrs": []string{"203.0.113.0/24"}}, status: 200})
	c.do(t, call{method: "PATCH", path: path, bearer: hana, body: map[string]any{"allowed_cidrs": []string{"203.0.113.0/24"}}, status: 200})
	if events, _, _ := e.Store.ListAudit(context.Background(), keystore.AuditFilter{Action: keystore.ActionKeyUpdated, Target: id}); len(events) != len(steps)+1 {
		t.Errorf("%d key.updated events, want %d: the same list again is no change", len(events), len(steps)+1)
	}

	// Another user's key is a 404, and stays as it was.
	c.do(t, call{method: "PATCH", path: path, bearer: ivan, body: map[string]any{"allowed_cidrs": nil}, status: 404})
	c.do(t, call{method: "GET", path: path, bearer: ivan, status: 404})
	// The operator may change it too.
	r = c.do(t, call{method: "PATCH", path: path, bearer: op, body: map[string]any{"allowed_cidrs": []string{"203.0.113.0/24", "2001:db8::/32"}}, status: 200})
	if got := allowedCIDRs(t, r.Body); !cmp.Equal(got, both) {
		t.Errorf("the operator's PATCH: %v, want %v", got, both)
	}

	// A roll keeps the allowlist; the previous key keeps it too.
	r = c.do(t, call{method: "POST", path: path + "/roll", bearer: hana, body: map[string]any{"grace_seconds": 60}, status: 201})
	prev, _ := r.Body["previous"].(map[string]any)
	if got := allowedCIDRs(t, r.Body); !cmp.Equal(got, both) || !cmp.Equal(allowedCIDRs(t, prev), both) {
		t.Errorf("roll: new key's allowed_cidrs %v, previous %v, want %v", got, allowedCIDRs(t, prev), both)
	}
	if got := allowedCIDRs(t, c.do(t, call{method: "GET", path: keysPath + "/" + r.Str("id"), bearer: hana, status: 200}).Body); !cmp.Equal(got, both) {
		t.Errorf("the rolled key read back: %v, want %v", got, both)
	}
}

// With --admin-reverify, a session's change that widens a key's network
// allowlist (removing it, or allowing an address the current one does
// not) needs a recent second factor: else 403 with Clerk's hint and no
// change. Narrowing it, setting one where there was none, and the same
// list again need none; a fresh session and the operator may widen.
func TestKeyNetworksReverification(t *testing.T) {
	rv, err := jwtauth.ParseReverification("second_factor:10m")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, func(c *adminsvc.Config) { c.Reverify = &rv })
	fresh, stale := fvaToken(t, e, "user_rvnet", []int{0, 3}), fvaToken(t, e, "user_rvnet", []int{0, 30})
	r := e.Do("POST", "/v1/keys", fresh, map[string]any{"name": "k", "scopes": []string{}, "allowed_cidrs": []string{"203.0.113.0/24", "2001:db8::/32"}})
	e.MustStatus(r, 201)
	path := "/v1/keys/" + r.Str("id")
	r = e.Do("POST", "/v1/keys", fresh, map[string]any{"name": "open", "scopes": []string{}})
	e.MustStatus(r, 201)
	open := "/v1/keys/" + r.Str("id")

	hint := denialtest.ClerkHint(t, "second_factor", 10)
	updates := func() int {
		t.Helper()
		events, _, err := e.Store.ListAudit(context.Background(), keystore.AuditFilter{Action: keystore.ActionKeyUpdated})
		if err != nil {
			t.Fatal(err)
		}
		return len(events)
	}
	current := func(p string) []string {
		t.Helper()
		r := e.Do("GET", p, fresh, nil)
		e.MustStatus(r, 200)
		return allowedCIDRs(t, r.Body)
	}
	for _, tc := range []struct {
		name string
		path string
		body map[string]any
		want int // 200, or 403 with the hint
	}{
		{"the same list", path, map[string]any{"allowed_cidrs": []string{"2001:db8::/32", "203.0.113.0/24"}}, 200},
		{"narrowed", path, map[string]any{"allowed_cidrs": []string{"203.0.113.0/24", "2001:db8::/48"}}, 200},
		{"an address added", path, map[string]any{"allowed_cidrs": []string{"203.0.113.0/24", "2001:db8::/48", "198.51.100.7"}}, 403},
		{"a network grown", path, map[string]any{"allowed_cidrs": []string{"203.0.112.0/23", "2001:db8::/48"}}, 403},
		{"removed with null", path, map[string]any{"allowed_cidrs": nil}, 403},
		{"removed with []", path, map[string]any{"allowed_cidrs": []string{}}, 403},
		{"widened beside a rename", path, map[string]any{"name": "renamed", "allowed_cidrs": nil}, 403},
		{"narrowed to one address", path, map[string]any{"allowed_cidrs": []string{"203.0.113.9"}}, 200},
		{"first set", open, map[string]any{"allowed_cidrs": []string{"192.0.2.0/24"}}, 200},
	} {
		before, cidrs := updates(), current(tc.path)
		r := e.Do("PATCH", tc.path, stale, tc.body)
		if r.Status != tc.want {
			t.Errorf("%s with a stale session: %d %s, want %d", tc.name, r.Status, r.Raw, tc.want)
			continue
		}
		if tc.want == 403 {
			if diff := cmp.Diff(hint, r.Body["clerk_error"]); diff != "" || r.ErrorCode() != "FORBIDDEN" {
				t.Errorf("%s: %s; clerk_error (-Clerk's shape, +ours):\n%s", tc.name, r.Raw, diff)
			}
			if after := current(tc.path); updates() != before || !cmp.Equal(after, cidrs) {
				t.Errorf("%s: refused, but the key changed: %v, was %v", tc.name, after, cidrs)
			}
		}
	}
	if got := current(path); !cmp.Equal(got, []string{"203.0.113.9/32"}) {
		t.Fatalf("allowed_cidrs %v, want [203.0.113.9/32]", got)
	}
	// A fresh session may widen; so may the operator, with no session.
	r = e.Do("PATCH", path, fresh, map[string]any{"allowed_cidrs": []string{"203.0.113.0/24"}})
	e.MustStatus(r, 200)
	if got := allowedCIDRs(t, r.Body); !cmp.Equal(got, []string{"203.0.113.0/24"}) {
		t.Errorf("widened by a fresh session: %v", got)
	}
	r = e.Do("PATCH", path, admintest.OperatorToken, map[string]any{"allowed_cidrs": nil})
	e.MustStatus(r, 200)
	if _, ok := r.Body["allowed_cidrs"]; ok {
		t.Errorf("removed by the operator: %s", r.Raw)
	}
	// Renaming alone needs no step-up, allowlist or not.
	e.MustStatus(e.Do("PATCH", open, stale, map[string]any{"name": "still open"}), 200)
}

// olderReplica runs f while the env's bus has a replica of a release
// before network allowlists: one that heartbeats without announcing them
// (keystore.Redis.ReplicasIgnoringAllowlists). It never acknowledges a
// change, so f should make none that waits for the replicas.
func olderReplica(t *testing.T, e *env, f func()) {
	t.Helper()
	opts, err := redis.ParseURL(e.Config.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opts)
	defer client.Close()
	ctx, key := context.Background(), e.Config.RedisPrefix+"replicas"
	beat := func() error {
		return client.ZAdd(ctx, key, redis.Z{Score: float64(time.Now().UnixMilli()), Member: "replica-old"}).Err()
	}
	if err := beat(); err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { // a heartbeat, however slow f is
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				_ = beat()
			}
		}
	}()
	defer func() {
		close(stop)
		<-done
		client.ZRem(ctx, key, "replica-old")
	}()
	f()
}
