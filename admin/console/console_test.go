package console_test

import (
	"context"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/admin/console"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/keystore"
)

// browser is a client of the console with its own cookies; it does not
// follow redirects, so that tests see them.
type browser struct {
	t    *testing.T
	e    *admintest.Env
	c    *http.Client
	csrf string // the CSRF token of the last page that had one
}

func newBrowser(e *admintest.Env) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: e.T, e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// page is an answer of the console.
type page struct {
	status int
	header http.Header
	body   string
}

var (
	csrfField   = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	signinField = regexp.MustCompile(`name="signin" value="([^"]+)"`)
	plaintext   = regexp.MustCompile(`id="plaintext" readonly value="(odin_sk_\w+)"`)
)

// do sends a request as a browser sends its own forms (Sec-Fetch-Site
// same-origin, the page's Origin) unless headers say otherwise.
func (b *browser) do(method, path string, form url.Values, headers map[string]string) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, b.e.URL+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if method == http.MethodPost {
		req.Header.Set("Origin", b.e.URL)
	}
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	p := page{status: resp.StatusCode, header: resp.Header, body: string(raw)}
	if m := csrfField.FindStringSubmatch(p.body); m != nil {
		b.csrf = m[1]
	}
	return p
}

func (b *browser) get(path string) page { b.t.Helper(); return b.do(http.MethodGet, path, nil, nil) }

// post sends a form with the session's CSRF token.
func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if form.Get("csrf") == "" {
		form.Set("csrf", b.csrf)
	}
	return b.do(http.MethodPost, path, form, nil)
}

// signIn signs in with token through the sign-in form.
func (b *browser) signIn(token string) page {
	b.t.Helper()
	p := b.get("/console/signin")
	m := signinField.FindStringSubmatch(p.body)
	if p.status != http.StatusOK || m == nil {
		b.t.Fatalf("sign-in page: %d\n%s", p.status, p.body)
	}
	return b.do(http.MethodPost, "/console/signin", url.Values{"signin": {m[1]}, "token": {token}}, nil)
}

// mustSignIn signs in and loads the keys page (for its CSRF token).
func (b *browser) mustSignIn(token string) {
	b.t.Helper()
	if p := b.signIn(token); p.status != http.StatusSeeOther || p.header.Get("Location") != "/console/keys" {
		b.t.Fatalf("sign-in: %d %s\n%s", p.status, p.header.Get("Location"), p.body)
	}
	if p := b.get("/console/keys"); p.status != http.StatusOK {
		b.t.Fatalf("keys page after sign-in: %d\n%s", p.status, p.body)
	}
}

// want fails the test unless p has status want and contains every text.
func (b *browser) want(p page, status int, texts ...string) {
	b.t.Helper()
	if p.status != status {
		b.t.Fatalf("status %d, want %d\n%s", p.status, status, p.body)
	}
	for _, s := range texts {
		if !strings.Contains(p.body, s) {
			b.t.Errorf("the page lacks %q\n%s", s, p.body)
		}
	}
}

// createKey creates a key through the admin API for owner (user or org).
func createKey(t *testing.T, e *admintest.Env, name, user, org string) string {
	t.Helper()
	body := map[string]any{"name": name, "scopes": []string{"scans:read"}}
	if user != "" {
		body["user_id"] = user
	}
	if org != "" {
		body["org_id"] = org
	}
	r := e.Do("POST", "/v1/keys", admintest.OperatorToken, body)
	e.MustStatus(r, http.StatusCreated)
	return r.Str("id")
}

func cookieOf(t *testing.T, h http.Header, name string) *http.Cookie {
	t.Helper()
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no cookie %s in %v", name, h.Values("Set-Cookie"))
	return nil
}

// Every answer carries the security headers; pages are never cached.
func TestSecurityHeaders(t *testing.T) {
	e := admintest.NewEnv(t)
	b := newBrowser(e)
	b.mustSignIn(admintest.OperatorToken)
	id := createKey(t, e, "k", "user_a", "")
	for _, path := range []string{"/console/signin", "/console/keys", "/console/keys/" + id, "/console/audit", "/console/sessions", "/console/nowhere", "/console/static/console.css", "/console/static/console.js"} {
		p := b.get(path)
		h := p.header
		for k, want := range map[string]string{
			"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
			"X-Frame-Options":         "DENY",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
		} {
			if got := h.Get(k); got != want {
				t.Errorf("%s: %s %q, want %q", path, k, got, want)
			}
		}
		if h.Get("Content-Security-Policy") != console.CSP {
			t.Errorf("%s: the CSP is not console.CSP", path)
		}
		static := strings.HasPrefix(path, "/console/static/")
		if cc := h.Get("Cache-Control"); static == (cc == "no-store") {
			t.Errorf("%s: Cache-Control %q", path, cc)
		}
	}
	if p := b.get("/console/nowhere"); p.status != http.StatusNotFound {
		t.Errorf("an unknown page: %d", p.status)
	}
	if p := b.get("/console/static/"); p.status != http.StatusNotFound {
		t.Errorf("the static directory: %d, want 404 (no listing)", p.status)
	}
	if p := b.get("/console/static/console.css"); !strings.HasPrefix(p.header.Get("Content-Type"), "text/css") {
		t.Errorf("console.css: Content-Type %q", p.header.Get("Content-Type"))
	}
	// No page has inline script or style: the CSP would refuse it.
	for _, path := range []string{"/console/signin", "/console/keys", "/console/keys/" + id, "/console/audit", "/console/sessions"} {
		body := b.get(path).body
		if regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]|<style|\sstyle=|\son[a-z]+=`).MatchString(body) {
			t.Errorf("%s has inline script or style:\n%s", path, body)
		}
	}
}

// The session cookie is HttpOnly, SameSite=Strict, Path=/, with the
// session's lifetime; Secure with the __Host- prefix except on loopback.
func TestSessionCookieFlags(t *testing.T) {
	e := admintest.NewEnvWith(t, func(c *adminsvc.Config) { c.ConsoleSessionTTL = 600_000_000_000 }) // 10 minutes
	b := newBrowser(e)
	p := b.signIn(admintest.OperatorToken)
	c := cookieOf(t, p.header, "odin_console")
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge != 600 || c.Secure {
		t.Errorf("loopback session cookie: %+v", c)
	}
	// Anywhere but loopback, the cookie is Secure and __Host-.
	p = b.do(http.MethodGet, "/console/signin", nil, nil)
	req, _ := http.NewRequest("GET", e.URL+"/console/signin", nil)
	req.Host = "admin.example.com"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sc := cookieOf(t, resp.Header, "__Host-odin_console_signin")
	if !sc.Secure || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Path != "/" || sc.Domain != "" {
		t.Errorf("non-loopback sign-in cookie: %+v", sc)
	}
	_ = p
}

// Sign-in trades a token for a session; a wrong token, a forged form or
// a cross-site post is refused with no session; sign-out ends it for good.
func TestSignInAndOut(t *testing.T) {
	e := admintest.NewEnv(t)
	b := newBrowser(e)
	if p := b.get("/console/keys"); p.status != http.StatusSeeOther || p.header.Get("Location") != "/console/signin" {
		t.Fatalf("keys before sign-in: %d %s", p.status, p.header.Get("Location"))
	}
	p := b.signIn("not-the-token-0123456789abcdef0123456789")
	b.want(p, http.StatusUnauthorized, "was not accepted")
	if strings.Contains(p.body, "not-the-token") {
		t.Error("the sign-in page echoes the token")
	}
	for _, c := range (&http.Response{Header: p.header}).Cookies() {
		if c.Name == "odin_console" {
			t.Errorf("a refused sign-in set a session cookie")
		}
	}
	// The form's own token is required (login CSRF).
	p = b.do(http.MethodPost, "/console/signin", url.Values{"signin": {"forged"}, "token": {admintest.OperatorToken}}, nil)
	b.want(p, http.StatusForbidden, "expired or was not sent from this page")
	// A cross-site post is refused even with the form's token.
	pg := b.get("/console/signin")
	tok := signinField.FindStringSubmatch(pg.body)[1]
	p = b.do(http.MethodPost, "/console/signin", url.Values{"signin": {tok}, "token": {admintest.OperatorToken}}, map[string]string{"Sec-Fetch-Site": "cross-site"})
	b.want(p, http.StatusForbidden)

	b.mustSignIn(admintest.OperatorToken)
	cookie := b.c.Jar.Cookies(mustURL(t, e.URL))
	p = b.post("/console/signout", nil)
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/console/signin" {
		t.Fatalf("sign-out: %d %s", p.status, p.header.Get("Location"))
	}
	// The old cookie, replayed, is worthless.
	replay := newBrowser(e)
	replay.c.Jar.SetCookies(mustURL(t, e.URL), cookie)
	if p := replay.get("/console/keys"); p.status != http.StatusSeeOther {
		t.Errorf("the signed-out cookie still opens the keys page: %d", p.status)
	}
}

// Failed sign-ins count against the API's failed-authentication throttle.
func TestSignInThrottled(t *testing.T) {
	e := admintest.NewEnv(t)
	b := newBrowser(e)
	last := 0
	for range 25 {
		last = b.signIn("wrong-token-0123456789abcdef0123456789").status
		if last == http.StatusTooManyRequests {
			break
		}
	}
	if last != http.StatusTooManyRequests {
		t.Fatalf("25 failed sign-ins: the last answered %d, want 429", last)
	}
}

// Every POST needs the session's CSRF token and a same-origin request.
func TestCSRF(t *testing.T) {
	e := admintest.NewEnv(t)
	b := newBrowser(e)
	b.mustSignIn(admintest.OperatorToken)
	id := createKey(t, e, "target", "user_a", "")
	for name, tc := range map[string]struct {
		form    url.Values
		headers map[string]string
	}{
		"no token":         {url.Values{"csrf": {""}}, nil},
		"wrong token":      {url.Values{"csrf": {"0123456789"}}, nil},
		"cross-site":       {nil, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		"same-site":        {nil, map[string]string{"Sec-Fetch-Site": "same-site"}},
		"another origin":   {nil, map[string]string{"Origin": "https://evil.example"}},
		"opaque origin":    {nil, map[string]string{"Origin": "null", "Sec-Fetch-Site": ""}},
		"malformed origin": {nil, map[string]string{"Origin": "::"}},
	} {
		t.Run(name, func(t *testing.T) {
			form := tc.form
			if form == nil {
				form = url.Values{"csrf": {b.csrf}}
			} else if form.Get("csrf") == "" {
				form.Del("csrf")
			}
			p := b.do(http.MethodPost, "/console/keys/"+id+"/revoke", form, tc.headers)
			b.want(p, http.StatusForbidden, "CSRF")
			k, err := e.Store.Key(context.Background(), id)
			if err != nil || !k.RevokedAt.IsZero() {
				t.Fatalf("the key was revoked by a refused request: %v", err)
			}
		})
	}
	// A browser's own form under Referrer-Policy no-referrer: Origin null,
	// Sec-Fetch-Site same-origin. Accepted.
	p := b.do(http.MethodPost, "/console/keys/"+id+"/revoke", url.Values{"csrf": {b.csrf}}, map[string]string{"Origin": "null"})
	if p.status != http.StatusSeeOther {
		t.Fatalf("a same-origin form with Origin null: %d\n%s", p.status, p.body)
	}
	// A POST with no session at all goes to the sign-in page, or is
	// refused when cross-site.
	anon := newBrowser(e)
	if p := anon.do(http.MethodPost, "/console/keys", url.Values{}, nil); p.status != http.StatusSeeOther {
		t.Errorf("a POST without a session: %d", p.status)
	}
	if p := anon.do(http.MethodPost, "/console/keys", url.Values{}, map[string]string{"Sec-Fetch-Site": "cross-site"}); p.status != http.StatusForbidden {
		t.Errorf("a cross-site POST without a session: %d", p.status)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// The operator creates a key: it is shown once, then only by its hint;
// rolled, the new key is shown once; revoked, the page says so.
func TestKeyLifecycle(t *testing.T) {
	e := admintest.NewEnv(t)
	b := newBrowser(e)
	b.mustSignIn(admintest.OperatorToken)
	p := b.post("/console/keys", url.Values{"name": {"ci deploy"}, "user_id": {"user_a"}, "scope": {"scans:read", "scans:write"}, "expires": {"30"}})
	b.want(p, http.StatusCreated, "shown this once", "ci deploy")
	m := plaintext.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no key on the created page:\n%s", p.body)
	}
	key := m[1]
	keys, _, err := e.Store.ListKeys(context.Background(), keystore.ListKeysOptions{UserID: "user_a"})
	if err != nil || len(keys) != 1 || keys[0].ExpiresAt.IsZero() || len(keys[0].Scopes) != 2 {
		t.Fatalf("the store has %v, %v", keys, err)
	}
	id := keys[0].ID
	for _, path := range []string{"/console/keys", "/console/keys/" + id} {
		p := b.get(path)
		b.want(p, http.StatusOK, keys[0].Hint)
		if strings.Contains(p.body, key) {
			t.Errorf("%s shows the key again", path)
		}
	}
	b.want(b.get("/console/keys/"+id), http.StatusOK, "key.created", "scans:read, scans:write", "Checks per hour")
	b.want(b.get("/console/keys/"+id+"?by=day"), http.StatusOK, "Checks per day")
	b.want(b.get("/console/keys?status=revoked"), http.StatusOK, "No keys.")

	// Bad input: the API's own message, the form filled in again.
	p = b.post("/console/keys", url.Values{"name": {"no owner"}, "scope": {"scans:read"}})
	b.want(p, http.StatusBadRequest, "the operator must name the owner", `value="no owner"`)
	p = b.post("/console/keys", url.Values{"name": {"x"}, "user_id": {"user_a"}, "expires": {"-5"}})
	b.want(p, http.StatusBadRequest, "Choose an expiry")

	// Roll with grace: a new key shown once, the old one expiring.
	b.get("/console/keys/" + id)
	p = b.post("/console/keys/"+id+"/roll", url.Values{"grace_seconds": {"3600"}})
	b.want(p, http.StatusCreated, "Key rolled", id, "expires")
	if m := plaintext.FindStringSubmatch(p.body); m == nil || m[1] == key {
		t.Fatalf("the roll page shows no new key:\n%s", p.body)
	}
	b.want(b.post("/console/keys/"+id+"/roll", url.Values{"grace_seconds": {"12"}}), http.StatusBadRequest, "grace period")
	b.want(b.post("/console/keys/"+id+"/roll", url.Values{"grace_seconds": {"0"}}), http.StatusConflict)

	// Revoke: a redirect to the key's page, which says so.
	p = b.post("/console/keys/"+id+"/revoke", nil)
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/console/keys/"+id+"?done=revoked" {
		t.Fatalf("revoke: %d %s\n%s", p.status, p.header.Get("Location"), p.body)
	}
	b.want(b.get("/console/keys/"+id+"?done=revoked"), http.StatusOK, "Key revoked", "key.revoked")
	if k, _ := e.Store.Key(context.Background(), id); k.RevokedAt.IsZero() {
		t.Error("the key is not revoked in the store")
	}
	b.want(b.get("/console/keys?status=revoked"), http.StatusOK, id)
}

// A user sees and manages only their own keys, an organisation admin
// their organisation's too; anyone else's key is a 404, as in the API.
func TestAuthorization(t *testing.T) {
	e := admintest.NewEnv(t)
	mine := createKey(t, e, "mine", "user_a", "")
	theirs := createKey(t, e, "theirs", "user_b", "")
	orgKey := createKey(t, e, "org key", "", "org_1")

	a := newBrowser(e)
	a.mustSignIn(e.Token("user_a", "", ""))
	p := a.get("/console/keys")
	a.want(p, http.StatusOK, mine)
	if strings.Contains(p.body, theirs) || strings.Contains(p.body, orgKey) {
		t.Errorf("user_a's list shows another's key:\n%s", p.body)
	}
	a.want(a.get("/console/keys/"+mine), http.StatusOK)
	for _, id := range []string{theirs, orgKey, "key_doesnotexist"} {
		a.want(a.get("/console/keys/"+id), http.StatusNotFound, "no such key")
		a.want(a.post("/console/keys/"+id+"/revoke", nil), http.StatusNotFound)
		a.want(a.post("/console/keys/"+id+"/roll", url.Values{"grace_seconds": {"0"}}), http.StatusNotFound)
	}
	if k, _ := e.Store.Key(context.Background(), theirs); !k.RevokedAt.IsZero() || k.ReplacedBy != "" {
		t.Error("user_a changed user_b's key")
	}
	// A user creates keys for themselves only.
	a.want(a.post("/console/keys", url.Values{"name": {"for me"}, "scope": {"scans:read"}, "user_id": {"user_b"}}), http.StatusCreated)
	keys, _, _ := e.Store.ListKeys(context.Background(), keystore.ListKeysOptions{UserID: "user_b"})
	if len(keys) != 1 {
		t.Errorf("user_a created a key for user_b: %d keys", len(keys))
	}
	// The organisation filter needs the admin role.
	a.want(a.get("/console/keys?owner=org"), http.StatusForbidden)

	admin := newBrowser(e)
	admin.mustSignIn(e.Token("user_c", "org_1", "org:admin"))
	admin.want(admin.get("/console/keys?owner=org"), http.StatusOK, orgKey)
	admin.want(admin.get("/console/keys/"+orgKey), http.StatusOK)
	admin.want(admin.post("/console/keys", url.Values{"name": {"org ci"}, "owner": {"org"}, "scope": {"scans:read"}}), http.StatusCreated, "org ci")
	member := newBrowser(e)
	member.mustSignIn(e.Token("user_d", "org_1", "org:member"))
	member.want(member.get("/console/keys/"+orgKey), http.StatusNotFound)
}

// A Clerk session logged out ends its console session too.
func TestLoggedOutSessionEndsConsoleSession(t *testing.T) {
	e := admintest.NewEnv(t)
	b := newBrowser(e)
	b.mustSignIn(e.Token("user_a", "", ""))
	e.MustStatus(e.Do("POST", "/v1/sessions/sess_user_a/revoke", admintest.OperatorToken, nil), http.StatusOK)
	if p := b.get("/console/keys"); p.status != http.StatusSeeOther || p.header.Get("Location") != "/console/signin" {
		t.Fatalf("after the Clerk session's logout: %d %s", p.status, p.header.Get("Location"))
	}
}

// Key names and audit fields are text: markup in them is escaped.
func TestEscaping(t *testing.T) {
	e := admintest.NewEnv(t)
	const evil = `<script>alert(1)</script><img src=x onerror=alert(2)>"'`
	id := createKey(t, e, evil, "user_a", "")
	b := newBrowser(e)
	b.mustSignIn(e.Token(`user_a`, "", ""))
	// An audit event whose actor and action carry markup.
	if err := e.Store.AppendAudit(context.Background(), keystore.AuditEvent{Actor: evil, Action: "key.revoked", Target: id, Owner: "user_a", RequestID: "req-x"}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/console/keys", "/console/keys/" + id, "/console/audit"} {
		p := b.get(path)
		if strings.Contains(p.body, "<script>alert") || strings.Contains(p.body, "<img src=x") {
			t.Errorf("%s renders markup from a key name or an audit field:\n%s", path, p.body)
		}
		if !strings.Contains(p.body, html.EscapeString("<script>alert(1)</script>")) {
			t.Errorf("%s does not show the name as text", path)
		}
	}
	p := b.post("/console/keys", url.Values{"name": {evil}, "scope": {"scans:read"}})
	b.want(p, http.StatusCreated)
	if strings.Contains(p.body, "<script>alert") {
		t.Errorf("the created page renders markup from the name:\n%s", p.body)
	}
}

// With the console off, /console/ is the API's 404.
func TestConsoleOff(t *testing.T) {
	e := admintest.NewEnvWith(t, func(c *adminsvc.Config) { c.ConsoleDisabled = true })
	r := e.Do("GET", "/console/signin", "", nil)
	if r.Status != http.StatusNotFound || r.ErrorCode() != "NOT_FOUND" {
		t.Errorf("/console/signin with the console off: %d %s", r.Status, r.Raw)
	}
}

// The audit log: filtered, and only the caller's own events for a user.
func TestAuditLogPage(t *testing.T) {
	e := admintest.NewEnv(t)
	mine := createKey(t, e, "mine", "user_a", "")
	theirs := createKey(t, e, "theirs", "user_b", "")
	op := newBrowser(e)
	op.mustSignIn(admintest.OperatorToken)
	op.post("/console/keys/"+mine+"/revoke", nil)
	op.want(op.get("/console/audit"), http.StatusOK, mine, theirs, "key.created", "key.revoked", `{&#34;reason&#34;:&#34;operator&#34;}`)
	p := op.get("/console/audit?action=key.revoked")
	op.want(p, http.StatusOK, mine)
	if strings.Contains(p.body, theirs) {
		t.Error("the action filter kept another action's event")
	}
	op.want(op.get("/console/audit?owner=user_b"), http.StatusOK, theirs)
	today := time.Now().UTC().Format(time.DateOnly)
	op.want(op.get("/console/audit?since="+today+"&until="+today), http.StatusOK, mine)
	op.want(op.get("/console/audit?since=2001-01-01&until=2001-01-02"), http.StatusOK, "No events.")
	op.want(op.get("/console/audit?since=yesterday"), http.StatusBadRequest, "must be a date")

	a := newBrowser(e)
	a.mustSignIn(e.Token("user_a", "", ""))
	p = a.get("/console/audit?owner=user_b")
	a.want(p, http.StatusOK, mine)
	if strings.Contains(p.body, theirs) {
		t.Errorf("user_a's audit log shows user_b's events:\n%s", p.body)
	}
}

// Sessions: a user logs out their own (and so leaves the console), not
// another's; the operator logs out any.
func TestSessionsPage(t *testing.T) {
	e := admintest.NewEnv(t)
	a := newBrowser(e)
	a.mustSignIn(e.Token("user_a", "", ""))
	a.want(a.get("/console/sessions"), http.StatusOK, `value="sess_user_a"`)
	a.want(a.post("/console/sessions/revoke", url.Values{"sid": {"sess_user_b"}}), http.StatusNotFound, "no such session")
	a.want(a.post("/console/sessions/revoke", url.Values{"sid": {"not a session id"}}), http.StatusBadRequest, "not a valid session id")
	b := newBrowser(e)
	b.mustSignIn(e.Token("user_b", "", ""))

	op := newBrowser(e)
	op.mustSignIn(admintest.OperatorToken)
	p := op.post("/console/sessions/revoke", url.Values{"sid": {"sess_user_b"}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("the operator's session revoke: %d\n%s", p.status, p.body)
	}
	op.want(op.get(p.header.Get("Location")), http.StatusOK, "sess_user_b logged out")
	if p := b.get("/console/keys"); p.status != http.StatusSeeOther {
		t.Errorf("user_b's console session survived its logout: %d", p.status)
	}
	// user_a logs their own session out: that ends their console session.
	if p := a.post("/console/sessions/revoke", url.Values{"sid": {"sess_user_a"}}); p.status != http.StatusSeeOther {
		t.Fatalf("user_a's own session revoke: %d\n%s", p.status, p.body)
	}
	if p := a.get("/console/keys"); p.status != http.StatusSeeOther || p.header.Get("Location") != "/console/signin" {
		t.Errorf("after logging their own session out: %d %s", p.status, p.header.Get("Location"))
	}
}
