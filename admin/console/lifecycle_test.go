package console_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
)

// The key page renames a key, narrows its scopes (the operator also sets
// tier and expiry), disables and enables it; the list and the page show
// the disabled state.
func TestKeyChanges(t *testing.T) {
	e := admintest.NewEnv(t)
	ctx := context.Background()
	id := createKey(t, e, "old name", "user_a", "")
	e.MustStatus(e.Do("PATCH", "/v1/keys/"+id, admintest.OperatorToken, map[string]any{"scopes": []string{"scans:read", "scans:write"}}), http.StatusOK)

	// A user: rename and narrow.
	u := newBrowser(e)
	u.mustSignIn(e.Token("user_a", "", ""))
	p := u.get("/console/keys/" + id)
	u.want(p, http.StatusOK, `id="edit-name"`, `value="scans:write" checked`, `id="disable"`)
	if strings.Contains(p.body, `id="edit-tier"`) || strings.Contains(p.body, `id="edit-expires"`) {
		t.Error("a user's key page offers tier or expiry")
	}
	p = u.post("/console/keys/"+id+"/edit", url.Values{"name": {"new name"}, "scope": {"scans:read"}})
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/console/keys/"+id+"?done=updated" {
		t.Fatalf("edit: %d %s\n%s", p.status, p.header.Get("Location"), p.body)
	}
	u.want(u.get("/console/keys/"+id+"?done=updated"), http.StatusOK, "Key changed.", "new name", "key.updated")
	k, _ := e.Store.Key(ctx, id)
	if k.Name != "new name" || !slices.Equal(k.Scopes, []string{"scans:read"}) {
		t.Fatalf("the store has %q %v", k.Name, k.Scopes)
	}
	// The key's rate limit: the tier's, then its own once the operator
	// sets one.
	u.want(u.get("/console/keys/"+id), http.StatusOK, `<dd id="rate-limit">the tier's</dd>`)
	e.MustStatus(e.Do("PATCH", "/v1/keys/"+id, admintest.OperatorToken, map[string]any{"rate_limit": map[string]any{"rate": 10, "burst": 20}}), http.StatusOK)
	u.want(u.get("/console/keys/"+id), http.StatusOK, `<dd id="rate-limit">10/s:20, the key's own`)
	// A user cannot widen: the API's 403, the form as sent.
	p = u.post("/console/keys/"+id+"/edit", url.Values{"name": {"new name"}, "scope": {"scans:read", "scans:write"}})
	u.want(p, http.StatusForbidden, `id="action-error"`)
	// Nothing changed: said so, no request.
	u.want(u.post("/console/keys/"+id+"/edit", url.Values{"name": {"new name"}, "scope": {"scans:read"}}), http.StatusBadRequest, "Nothing to change")
	// An empty name: the API's message.
	u.want(u.post("/console/keys/"+id+"/edit", url.Values{"name": {""}, "scope": {"scans:read"}}), http.StatusBadRequest, "name")

	// Disable: the state on the page and in the list; enable again.
	p = u.post("/console/keys/"+id+"/disable", nil)
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/console/keys/"+id+"?done=disabled" {
		t.Fatalf("disable: %d %s\n%s", p.status, p.header.Get("Location"), p.body)
	}
	u.want(u.get("/console/keys/"+id+"?done=disabled"), http.StatusOK, "Key disabled", `class="badge disabled"`, `id="enable"`, "key.disabled")
	u.want(u.get("/console/keys"), http.StatusOK, `<span class="badge disabled">disabled</span>`)
	if k, _ := e.Store.Key(ctx, id); k.DisabledAt.IsZero() {
		t.Fatal("the key is not disabled in the store")
	}
	p = u.post("/console/keys/"+id+"/enable", nil)
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/console/keys/"+id+"?done=enabled" {
		t.Fatalf("enable: %d %s\n%s", p.status, p.header.Get("Location"), p.body)
	}
	u.want(u.get("/console/keys/"+id+"?done=enabled"), http.StatusOK, "Key enabled", `id="disable"`)
	if k, _ := e.Store.Key(ctx, id); !k.DisabledAt.IsZero() {
		t.Fatal("the key is still disabled in the store")
	}

	// The operator: any scope, tier and expiry.
	o := newBrowser(e)
	o.mustSignIn(admintest.OperatorToken)
	o.want(o.get("/console/keys/"+id), http.StatusOK, `id="edit-tier"`, `id="edit-expires"`)
	p = o.post("/console/keys/"+id+"/edit", url.Values{"name": {"new name"}, "scope": {"scans:read", "scans:write"}, "tier": {"pro"}, "expires": {"30"}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("operator edit: %d\n%s", p.status, p.body)
	}
	k, _ = e.Store.Key(ctx, id)
	if k.Tier != "pro" || k.ExpiresAt.IsZero() || len(k.Scopes) != 2 {
		t.Fatalf("the store has tier %q, expiry %v, scopes %v", k.Tier, k.ExpiresAt, k.Scopes)
	}
	o.want(o.post("/console/keys/"+id+"/edit", url.Values{"name": {"new name"}, "scope": {"scans:read", "scans:write"}, "tier": {"pro"}, "expires": {"never"}}), http.StatusSeeOther)
	if k, _ := e.Store.Key(ctx, id); !k.ExpiresAt.IsZero() {
		t.Error("expiry never: the key still expires")
	}
	o.want(o.post("/console/keys/"+id+"/edit", url.Values{"name": {"new name"}, "expires": {"-3"}}), http.StatusBadRequest, "Choose an expiry")
}

// Another user's key is a 404 on every change, and stays as it was.
func TestKeyChangesAuthorization(t *testing.T) {
	e := admintest.NewEnv(t)
	theirs := createKey(t, e, "theirs", "user_b", "")
	orgKey := createKey(t, e, "org key", "", "org_1")
	a := newBrowser(e)
	a.mustSignIn(e.Token("user_a", "org_1", "org:member"))
	for _, id := range []string{theirs, orgKey, "key_doesnotexist"} {
		a.want(a.post("/console/keys/"+id+"/edit", url.Values{"name": {"mine now"}, "scope": {"scans:read"}}), http.StatusNotFound)
		a.want(a.post("/console/keys/"+id+"/disable", nil), http.StatusNotFound)
		a.want(a.post("/console/keys/"+id+"/enable", nil), http.StatusNotFound)
	}
	for _, id := range []string{theirs, orgKey} {
		if k, _ := e.Store.Key(context.Background(), id); k.Name == "mine now" || !k.DisabledAt.IsZero() {
			t.Errorf("user_a changed %s", id)
		}
	}
}

// Every new form is refused without its CSRF token, and nothing changes.
func TestKeyChangesCSRF(t *testing.T) {
	e := admintest.NewEnv(t)
	id := createKey(t, e, "target", "user_a", "")
	b := newBrowser(e)
	b.mustSignIn(admintest.OperatorToken)
	for _, action := range []string{"edit", "disable", "enable"} {
		for name, h := range map[string]map[string]string{"no token": nil, "cross-site": {"Sec-Fetch-Site": "cross-site"}} {
			form := url.Values{"name": {"changed"}, "scope": {"scans:read"}}
			if h != nil {
				form.Set("csrf", b.csrf)
			}
			b.want(b.do(http.MethodPost, "/console/keys/"+id+"/"+action, form, h), http.StatusForbidden, "CSRF")
			if k, _ := e.Store.Key(context.Background(), id); k.Name != "target" || !k.DisabledAt.IsZero() {
				t.Fatalf("%s %s: the key changed", action, name)
			}
		}
	}
}

// With --admin-reverify, enabling a key with a session whose second
// factor is stale is the API's 403, and the page says what to do.
func TestKeyChangesReverify(t *testing.T) {
	rv, err := jwtauth.ParseReverification("second_factor:10m")
	if err != nil {
		t.Fatal(err)
	}
	e := admintest.NewEnvWith(t, func(c *adminsvc.Config) { c.Reverify = &rv })
	id := createKey(t, e, "k", "user_a", "")
	e.MustStatus(e.Do("POST", "/v1/keys/"+id+"/disable", admintest.OperatorToken, nil), http.StatusOK)
	tok, err := e.Issuer.Mint(devissuer.Claims{Subject: "user_a", SessionID: "sess_user_a", Extra: map[string]any{"fva": []int{0, 30}}})
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(e)
	b.mustSignIn(tok)
	b.get("/console/keys/" + id)
	p := b.post("/console/keys/"+id+"/enable", nil)
	b.want(p, http.StatusForbidden, "Additional verification required", html.EscapeString("Verify your second factor again in the dashboard, then sign in again"))
	if k, _ := e.Store.Key(context.Background(), id); k.DisabledAt.IsZero() {
		t.Error("the key was enabled without the step-up")
	}
	// Roll too: the error page says it.
	b.want(b.post("/console/keys/"+id+"/roll", url.Values{"grace_seconds": {"0"}}), http.StatusForbidden, "Verify your second factor again in the dashboard")
}

// A key's new name is text on its page and in the list.
func TestKeyChangesEscaping(t *testing.T) {
	e := admintest.NewEnv(t)
	id := createKey(t, e, "plain", "user_a", "")
	b := newBrowser(e)
	b.mustSignIn(e.Token("user_a", "", ""))
	b.get("/console/keys/" + id)
	const evil = `<img src=x onerror=alert(3)>"`
	b.want(b.post("/console/keys/"+id+"/edit", url.Values{"name": {evil}, "scope": {"scans:read"}}), http.StatusSeeOther)
	for _, path := range []string{"/console/keys", "/console/keys/" + id} {
		p := b.get(path)
		if strings.Contains(p.body, "<img src=x") || !strings.Contains(p.body, html.EscapeString("<img src=x")) {
			t.Errorf("%s: the new name is not shown as text", path)
		}
	}
	// The form sent back after an error escapes it too.
	p := b.post("/console/keys/"+id+"/edit", url.Values{"name": {evil + "x"}, "scope": {"scans:read", "scans:write"}})
	if p.status != http.StatusForbidden || strings.Contains(p.body, "<img src=x") {
		t.Errorf("the refused form: %d, markup rendered: %v", p.status, strings.Contains(p.body, "<img src=x"))
	}
}

// The key page shows a key's networks and its edit form changes them
// through the API: narrowing needs no step-up, widening with a stale
// session is the API's 403 with the console's advice and no change, a bad
// entry is the API's 400 naming it (as text), a fresh session clears them,
// and a form without the field leaves them be. The create form takes
// them too.
func TestKeyNetworksForm(t *testing.T) {
	rv, err := jwtauth.ParseReverification("second_factor:10m")
	if err != nil {
		t.Fatal(err)
	}
	e := admintest.NewEnvWith(t, func(c *adminsvc.Config) { c.Reverify = &rv })
	ctx := context.Background()
	r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "office", "scopes": []string{"scans:read"}, "user_id": "user_a",
		"allowed_cidrs": []string{"2001:db8::/32", "203.0.113.0/24"}})
	e.MustStatus(r, http.StatusCreated)
	id := r.Str("id")
	cidrs := func() []string {
		t.Helper()
		k, err := e.Store.Key(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return keystore.CIDRStrings(k.AllowedCIDRs)
	}
	mint := func(fva []int) string {
		tok, err := e.Issuer.Mint(devissuer.Claims{Subject: "user_a", SessionID: "sess_user_a", Extra: map[string]any{"fva": fva}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	stale := newBrowser(e)
	stale.mustSignIn(mint([]int{0, 30}))
	stale.want(stale.get("/console/keys/"+id), http.StatusOK,
		`<dd id="allowed-cidrs"><code>203.0.113.0/24</code>, <code>2001:db8::/32</code> only</dd>`,
		`name="allowed_cidrs"`, ">203.0.113.0/24\n2001:db8::/32</textarea>")
	edit := func(b *browser, networks string) page {
		t.Helper()
		return b.post("/console/keys/"+id+"/edit", url.Values{"name": {"office"}, "scope": {"scans:read"}, "allowed_cidrs": {networks}})
	}

	// Narrowed (commas and spaces separate too): no step-up.
	stale.want(edit(stale, "203.0.113.0/25, 2001:db8::/32"), http.StatusSeeOther)
	if got := cidrs(); !slices.Equal(got, []string{"203.0.113.0/25", "2001:db8::/32"}) {
		t.Fatalf("narrowed: the store has %v", got)
	}
	// Widened (cleared, or a network added) with a stale factor: refused.
	for _, networks := range []string{"", "203.0.113.0/25\n2001:db8::/32\n198.51.100.7"} {
		p := edit(stale, networks)
		stale.want(p, http.StatusForbidden, "Additional verification required", html.EscapeString("Verify your second factor again in the dashboard"))
		if got := cidrs(); !slices.Equal(got, []string{"203.0.113.0/25", "2001:db8::/32"}) {
			t.Fatalf("widened to %q with a stale session: the store has %v", networks, got)
		}
	}
	// A bad entry: the API's message naming it; markup in it is text.
	stale.want(edit(stale, "203.0.113.0/25\n203.0.113.7/24"), http.StatusBadRequest, "allowed_cidrs[1]")
	p := edit(stale, `<img src=x onerror=alert(4)>`)
	if p.status != http.StatusBadRequest || strings.Contains(p.body, "<img src=x") || !strings.Contains(p.body, html.EscapeString("<img src=x")) {
		t.Errorf("a bad entry with markup: %d, markup rendered: %v", p.status, strings.Contains(p.body, "<img src=x"))
	}
	// A form without the field (another page's) leaves the networks be.
	stale.want(stale.post("/console/keys/"+id+"/edit", url.Values{"name": {"office 2"}, "scope": {"scans:read"}}), http.StatusSeeOther)
	if got := cidrs(); len(got) != 2 {
		t.Fatalf("a rename without the field: the store has %v", got)
	}

	// A fresh session clears them: any network.
	fresh := newBrowser(e)
	fresh.mustSignIn(mint([]int{0, 1}))
	fresh.want(edit(fresh, "  \n"), http.StatusSeeOther)
	if got := cidrs(); got != nil {
		t.Fatalf("cleared: the store has %v", got)
	}
	fresh.want(fresh.get("/console/keys/"+id), http.StatusOK, `<dd id="allowed-cidrs">any network</dd>`)

	// The create form.
	p = fresh.post("/console/keys", url.Values{"name": {"made with networks"}, "scope": {"scans:read"}, "allowed_cidrs": {"192.0.2.0/24\n2001:db8::1"}})
	fresh.want(p, http.StatusCreated, "Copy this key now")
	keys, _, err := e.Store.ListKeys(ctx, keystore.ListKeysOptions{UserID: "user_a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 || keys[0].Name != "made with networks" || !slices.Equal(keystore.CIDRStrings(keys[0].AllowedCIDRs), []string{"192.0.2.0/24", "2001:db8::1/128"}) {
		t.Errorf("created: %+v", keys)
	}
	fresh.want(fresh.post("/console/keys", url.Values{"name": {"bad networks"}, "allowed_cidrs": {"192.0.2.1/24"}}), http.StatusBadRequest, "allowed_cidrs[0]", ">192.0.2.1/24</textarea>")
}
