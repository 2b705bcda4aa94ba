package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/admin"
	"github.com/odin-scan/odin-authz/admin/api"
	"github.com/odin-scan/odin-authz/denial"
	"github.com/odin-scan/odin-authz/keystore"
)

// pageTemplate is one page: the layout with the page's content.
type pageTemplate = template.Template

var pageNames = []string{"signin", "keys", "key", "created", "error", "audit", "sessions", "status"}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"join": strings.Join,
	"age":  age,
	"has": func(list []string, v string) bool {
		for _, x := range list {
			if x == v {
				return true
			}
		}
		return false
	},
}

func parsePages() (map[string]*pageTemplate, error) {
	out := map[string]*pageTemplate{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		out[name] = t
	}
	return out, nil
}

// view is what the layout renders: the page's title, who is signed in,
// the CSRF token of the session's forms, and the page's own data.
type view struct {
	Title    string
	Who      string
	Operator bool
	CSRF     string
	Page     any
}

// render writes a page. The buffer keeps a failed template from sending
// half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, req *request, page any) {
	v := view{Page: page}
	if t, ok := page.(interface{ title() string }); ok {
		v.Title = t.title()
	}
	if req != nil {
		v.Who = who(req.session.principal)
		v.Operator = req.session.principal.Operator
		v.CSRF = req.session.csrf
	}
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout", v); err != nil {
		c.log.Error("console: render", "page", name, "error", err.Error())
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// who names the signed-in caller in the page header.
func who(p admin.Principal) string {
	switch {
	case p.Operator:
		return "operator"
	case p.OrgID != "" && p.OrgAdmin:
		return p.UserID + " (admin of " + p.OrgID + ")"
	case p.OrgID != "":
		return p.UserID + " (" + p.OrgID + ")"
	}
	return p.UserID
}

type errorPage struct {
	Title, Message string
}

func (p errorPage) title() string { return p.Title }

// --- sign-in and sign-out ---

type signinPage struct {
	Token   string // the sign-in form's own CSRF token (double-submit cookie)
	Message string
}

func (signinPage) title() string { return "Sign in" }

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(cookieName(r, sessionCookie)); err == nil && c.sessions.get(ck.Value, c.now()) != nil {
		http.Redirect(w, r, Path+"keys", http.StatusSeeOther)
		return
	}
	c.renderSignin(w, r, http.StatusOK, "")
}

func (c *Console) renderSignin(w http.ResponseWriter, r *http.Request, status int, message string) {
	tok := randomToken()
	setCookie(w, r, signinCookie, tok, signinCookieMaxAge)
	c.render(w, r, status, "signin", nil, signinPage{Token: tok, Message: message})
}

// signin trades a token (the operator token or a Clerk session token) for
// a session, by the admin API's own authentication and throttle.
func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	pre, _ := r.Cookie(cookieName(r, signinCookie))
	if pre == nil || !sameOrigin(r) || !equal(r.PostFormValue("signin"), pre.Value) {
		c.renderSignin(w, r, http.StatusForbidden, "The sign-in form expired or was not sent from this page. Try again.")
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	ar := r.Clone(r.Context())
	ar.Header = http.Header{"Authorization": {"Bearer " + token}}
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 { // the throttle's client, from a trusted proxy
		ar.Header["X-Forwarded-For"] = xff
	}
	p, err := c.api.Authenticate(ar)
	switch {
	case errors.Is(err, admin.ErrThrottled):
		c.renderSignin(w, r, http.StatusTooManyRequests, "Too many failed sign-ins from this address. Wait a minute and try again.")
		return
	case errors.Is(err, admin.ErrUnavailable):
		c.renderSignin(w, r, http.StatusServiceUnavailable, "The token could not be checked now (identity provider or session store unavailable). Try again shortly.")
		return
	case err != nil:
		c.log.Info("console sign-in refused")
		c.renderSignin(w, r, http.StatusUnauthorized, "That token was not accepted: use the operator token or a current Clerk session token.")
		return
	}
	c.startSession(w, r, p)
}

func (c *Console) startSession(w http.ResponseWriter, r *http.Request, p admin.Principal) {
	id, _ := c.sessions.create(p, c.now())
	setCookie(w, r, signinCookie, "", -1)
	setCookie(w, r, sessionCookie, id, c.sessions.ttl)
	c.log.Info("console sign-in", "who", who(p))
	http.Redirect(w, r, Path+"keys", http.StatusSeeOther)
}

// signinOnce signs in with a one-time link (odin dev's banner).
func (c *Console) signinOnce(w http.ResponseWriter, r *http.Request) {
	p, ok := c.sessions.useLink(r.PathValue("secret"), c.now())
	if !ok {
		c.render(w, r, http.StatusNotFound, "error", nil, errorPage{Title: "Link used or expired",
			Message: "This sign-in link was already used or has expired. Sign in with a token instead."})
		return
	}
	c.startSession(w, r, p)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, req *request) {
	c.sessions.end(req.cookie)
	setCookie(w, r, sessionCookie, "", -1)
	c.log.Info("console sign-out", "who", who(req.session.principal))
	http.Redirect(w, r, Path+"signin", http.StatusSeeOther)
}

// --- calls to the admin API ---

// failure is an admin API answer that is not 2xx.
type failure struct {
	status  int
	code    denial.Code
	message string
	// reverify: the 403 of a session that must verify a factor again
	// (--admin-reverify), with Clerk's hint.
	reverify bool
}

// reverifyHint is what the console adds to the 403 of a session that must
// verify a factor again: the console cannot prompt for it, the dashboard
// can, and the session keeps the factors of the token it was opened with.
const reverifyHint = "Verify your second factor again in the dashboard, then sign in again (sign out, and sign in with a fresh session token)."

// text is the failure's message for a page: the API's, with the
// reverification hint when it applies.
func (f *failure) text() string {
	if f.reverify {
		return f.message + ". " + reverifyHint
	}
	return f.message
}

// call makes one admin API request for the session's caller, in process;
// a 2xx answer is decoded into out.
func (c *Console) call(r *http.Request, req *request, method, target string, body, out any) *failure {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return &failure{status: http.StatusInternalServerError, message: "internal error"}
		}
	}
	status, resp := c.api.Do(r.Context(), req.session.principal, method, target, raw, req.requestID)
	if status >= 200 && status < 300 {
		if out != nil {
			if err := json.Unmarshal(resp, out); err != nil {
				return &failure{status: http.StatusInternalServerError, message: "internal error"}
			}
		}
		return nil
	}
	f := &failure{status: status, message: http.StatusText(status)}
	var b denial.Body
	if json.Unmarshal(resp, &b) == nil && b.Error.Message != "" {
		f.code, f.message = b.Error.Code, b.Error.Message
		f.reverify = status == http.StatusForbidden && b.ClerkError != nil
	}
	return f
}

// fail answers a failed API call: a 401 (the caller's session was logged
// out) ends the console session; anything else is an error page with the
// API's message and status.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, req *request, f *failure) {
	if f.status == http.StatusUnauthorized {
		c.sessions.end(req.cookie)
		setCookie(w, r, sessionCookie, "", -1)
		http.Redirect(w, r, Path+"signin", http.StatusSeeOther)
		return
	}
	title := http.StatusText(f.status)
	if f.status == http.StatusNotFound {
		title = "Not found"
	}
	c.render(w, r, f.status, "error", req, errorPage{Title: title, Message: f.text()})
}

// --- keys ---

type keysPage struct {
	Operator, OrgAdmin bool
	OrgID              string
	Filter             keysFilter
	Keys               []api.Key
	NextURL            string
	Scopes             []string
	Error              string
	FilterError        string
	Form               createForm
}

func (keysPage) title() string { return "API keys" }

// keysFilter is the list's filter, from the query string.
type keysFilter struct {
	Owner, UserID, OrgID, Status, Cursor string
	// Unused is "", a choice ("30d", "90d") or "custom" with UnusedCustom
	// (whole days or a Go duration, as the API takes it); Expiring is "",
	// "7d" or "30d".
	Unused, UnusedCustom, Expiring string
}

// Active reports whether the filter holds more than the owner, for the
// caption.
func (f keysFilter) Active() bool { return f.Status != "" || f.Unused != "" || f.Expiring != "" }

// unusedChoices and expiringChoices are the list's filter choices.
var (
	unusedChoices   = map[string]bool{"30d": true, "90d": true, "custom": true}
	expiringChoices = map[string]bool{"7d": true, "30d": true}
)

// createForm is what the create form was last sent with, to fill it in
// again after an error.
type createForm struct {
	Name, UserID, OrgID, Owner, Tier, Expires string
	Scopes                                    []string
	// AllowedCIDRs is the networks field as typed: one network a line,
	// or comma-separated.
	AllowedCIDRs string
}

func (c *Console) keysPage(w http.ResponseWriter, r *http.Request, req *request) {
	c.renderKeys(w, r, req, http.StatusOK, "", createForm{})
}

func (c *Console) renderKeys(w http.ResponseWriter, r *http.Request, req *request, status int, errMsg string, form createForm) {
	p := req.session.principal
	q := r.URL.Query()
	f := keysFilter{Owner: q.Get("owner"), UserID: q.Get("user_id"), OrgID: q.Get("org_id"), Status: q.Get("status"), Cursor: q.Get("cursor")}
	params := url.Values{}
	if p.Operator {
		if f.UserID != "" {
			params.Set("user_id", f.UserID)
		}
		if f.OrgID != "" {
			params.Set("org_id", f.OrgID)
		}
	} else if f.Owner == "org" {
		params.Set("owner", "org")
	}
	switch f.Status {
	case "active":
		params.Set("revoked", "false")
	case "revoked":
		params.Set("revoked", "true")
	default:
		f.Status = ""
	}
	f.Unused, f.UnusedCustom, f.Expiring = q.Get("unused"), strings.TrimSpace(q.Get("unused_custom")), q.Get("expiring")
	v := keysPage{Operator: p.Operator, OrgAdmin: p.OrgAdmin, OrgID: p.OrgID, Scopes: c.api.Scopes(), Error: errMsg, Form: form}
	switch {
	case f.Unused == "custom" && f.UnusedCustom != "":
		params.Set("unused_for", f.UnusedCustom)
	case f.Unused == "custom":
		f.Unused = ""
	case unusedChoices[f.Unused]:
		params.Set("unused_for", f.Unused)
		f.UnusedCustom = ""
	default:
		f.Unused, f.UnusedCustom = "", ""
	}
	if expiringChoices[f.Expiring] {
		params.Set("expires_within", f.Expiring)
	} else {
		f.Expiring = ""
	}
	v.Filter = f
	if f.Cursor != "" {
		params.Set("cursor", f.Cursor)
	}
	params.Set("limit", "50")
	var page api.KeyPage
	if fl := c.call(r, req, http.MethodGet, "/v1/keys?"+params.Encode(), nil, &page); fl != nil {
		if fl.status == http.StatusBadRequest && errMsg == "" { // a custom "unused for" the API refuses
			v.FilterError = fl.message
			c.render(w, r, http.StatusBadRequest, "keys", req, v)
			return
		}
		c.fail(w, r, req, fl)
		return
	}
	v.Keys = page.Keys
	if page.NextCursor != "" {
		next := url.Values{}
		for k, vs := range q {
			next[k] = vs
		}
		next.Set("cursor", page.NextCursor)
		v.NextURL = Path + "keys?" + next.Encode()
	}
	c.render(w, r, status, "keys", req, v)
}

// createdPage shows a new key once.
type createdPage struct {
	Plaintext string
	Key       api.Key
	Previous  *api.Key // the rolled key, for a roll
}

func (p createdPage) title() string {
	if p.Previous != nil {
		return "Key rolled"
	}
	return "Key created"
}

// expiryChoices are the create form's expiry options, in days.
var expiryChoices = map[string]int{"7": 7, "30": 30, "90": 90, "365": 365}

func (c *Console) createKey(w http.ResponseWriter, r *http.Request, req *request) {
	p := req.session.principal
	form := createForm{Name: strings.TrimSpace(r.PostFormValue("name")), Scopes: r.PostForm["scope"],
		UserID: strings.TrimSpace(r.PostFormValue("user_id")), OrgID: strings.TrimSpace(r.PostFormValue("org_id")),
		Owner: r.PostFormValue("owner"), Tier: strings.TrimSpace(r.PostFormValue("tier")), Expires: r.PostFormValue("expires"),
		AllowedCIDRs: r.PostFormValue("allowed_cidrs")}
	body := api.CreateKeyRequest{Name: form.Name, Scopes: form.Scopes, AllowedCIDRs: splitCIDRs(form.AllowedCIDRs)}
	if body.Scopes == nil {
		body.Scopes = []string{}
	}
	if p.Operator {
		body.UserID, body.OrgID, body.Tier = form.UserID, form.OrgID, form.Tier
	} else if form.Owner == "org" {
		body.OrgID = p.OrgID
	}
	if form.Expires != "" {
		days, ok := expiryChoices[form.Expires]
		if !ok {
			c.renderKeys(w, r, req, http.StatusBadRequest, "Choose an expiry from the list.", form)
			return
		}
		at := c.now().Add(time.Duration(days) * 24 * time.Hour).UTC().Truncate(time.Second)
		body.ExpiresAt = &at
	}
	var created api.CreatedKey
	if fl := c.call(r, req, http.MethodPost, "/v1/keys", body, &created); fl != nil {
		if fl.status == http.StatusBadRequest || fl.status == http.StatusForbidden || fl.status == http.StatusConflict {
			c.renderKeys(w, r, req, fl.status, fl.text(), form)
			return
		}
		c.fail(w, r, req, fl)
		return
	}
	c.render(w, r, http.StatusCreated, "created", req, createdPage{Plaintext: created.Plaintext, Key: created.Key})
}

type keyPage struct {
	Key      api.Key
	Chart    chart
	By       string
	Events   []keystore.AuditEvent
	Done     string
	Operator bool
	// Scopes are the edit form's choices: every scope for the operator,
	// the key's own for a user (who may only narrow them).
	Scopes []string
	Error  string
	Form   editForm
}

// editForm is what the edit form was last sent with, to fill it in again
// after an error.
type editForm struct {
	Sent                bool
	Name, Tier, Expires string
	Scopes              []string
	// AllowedCIDRs is the networks field: one network a line (as typed,
	// after an error); empty for any network.
	AllowedCIDRs string
}

func (p keyPage) title() string { return "Key " + p.Key.Name }

// doneMessages are the notices a redirect after an action may show.
var doneMessages = map[string]string{
	"revoked":  "Key revoked: checks with it are denied from now on.",
	"disabled": "Key disabled: checks with it are denied (401 \"API key is disabled\") until it is enabled again.",
	"enabled":  "Key enabled: checks with it are allowed again.",
	"updated":  "Key changed.",
}

func keyPath(id string) string { return Path + "keys/" + url.PathEscape(id) }

func (c *Console) keyPage(w http.ResponseWriter, r *http.Request, req *request) {
	c.renderKey(w, r, req, http.StatusOK, "", editForm{})
}

// renderKey renders a key's page, with an error and the edit form as sent
// after a failed change.
func (c *Console) renderKey(w http.ResponseWriter, r *http.Request, req *request, status int, errMsg string, form editForm) {
	id := r.PathValue("id")
	var detail api.KeyDetail
	if fl := c.call(r, req, http.MethodGet, "/v1/keys/"+url.PathEscape(id), nil, &detail); fl != nil {
		c.fail(w, r, req, fl)
		return
	}
	var audit api.AuditPage
	if fl := c.call(r, req, http.MethodGet, "/v1/audit-log?"+url.Values{"target": {detail.ID}, "limit": {"50"}}.Encode(), nil, &audit); fl != nil {
		c.fail(w, r, req, fl)
		return
	}
	by := r.URL.Query().Get("by")
	if by != "day" {
		by = "hour"
	}
	v := keyPage{Key: detail.Key, Chart: usageChart(detail.Usage, by, c.now()), By: by,
		Events: audit.Events, Done: doneMessages[r.URL.Query().Get("done")], Operator: req.session.principal.Operator,
		Scopes: detail.Scopes, Error: errMsg, Form: form}
	if v.Operator {
		v.Scopes = c.api.Scopes()
	}
	if !form.Sent {
		v.Form = editForm{Name: detail.Name, Tier: detail.Tier, Scopes: detail.Scopes,
			AllowedCIDRs: strings.Join(keystore.CIDRStrings(detail.AllowedCIDRs), "\n")}
	}
	if status != http.StatusOK {
		v.Done = ""
	}
	c.render(w, r, status, "key", req, v)
}

func (c *Console) revokeKey(w http.ResponseWriter, r *http.Request, req *request) {
	id := r.PathValue("id")
	if fl := c.call(r, req, http.MethodPost, "/v1/keys/"+url.PathEscape(id)+"/revoke", nil, nil); fl != nil {
		c.fail(w, r, req, fl)
		return
	}
	http.Redirect(w, r, keyPath(id)+"?done=revoked", http.StatusSeeOther)
}

// graceChoices are the roll form's grace periods, in seconds.
var graceChoices = map[string]int{"0": 0, "3600": 3600, "86400": 86400, "604800": 604800}

func (c *Console) rollKey(w http.ResponseWriter, r *http.Request, req *request) {
	id := r.PathValue("id")
	grace, ok := graceChoices[r.PostFormValue("grace_seconds")]
	if !ok {
		c.render(w, r, http.StatusBadRequest, "error", req, errorPage{Title: "Bad request", Message: "Choose a grace period from the list."})
		return
	}
	var rolled api.RolledKey
	if fl := c.call(r, req, http.MethodPost, "/v1/keys/"+url.PathEscape(id)+"/roll", api.RollKeyRequest{GraceSeconds: &grace}, &rolled); fl != nil {
		c.fail(w, r, req, fl)
		return
	}
	prev := rolled.Previous
	c.render(w, r, http.StatusCreated, "created", req, createdPage{Plaintext: rolled.Plaintext, Key: rolled.Key, Previous: &prev})
}

// updateKey changes a key's name, scopes (a user may only narrow them) and
// network allowlist and, for the operator, its tier and expiry: PATCH
// /v1/keys/{id} with the fields that differ from the key's. The API
// decides what is allowed, and asks for the step-up verification of a
// widened allowlist.
func (c *Console) updateKey(w http.ResponseWriter, r *http.Request, req *request) {
	id := r.PathValue("id")
	var cur api.KeyDetail
	if fl := c.call(r, req, http.MethodGet, "/v1/keys/"+url.PathEscape(id), nil, &cur); fl != nil {
		c.fail(w, r, req, fl)
		return
	}
	form := editForm{Sent: true, Name: strings.TrimSpace(r.PostFormValue("name")), Scopes: r.PostForm["scope"],
		Tier: strings.TrimSpace(r.PostFormValue("tier")), Expires: r.PostFormValue("expires"), AllowedCIDRs: r.PostFormValue("allowed_cidrs")}
	var body api.UpdateKeyRequest
	if form.Name != cur.Name {
		body.Name = &form.Name
	}
	scopes := form.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	if !sameSet(scopes, cur.Scopes) {
		body.Scopes = &scopes
	}
	// A form without the field (not this page's) leaves the allowlist be.
	if _, sent := r.PostForm["allowed_cidrs"]; sent {
		entries := splitCIDRs(form.AllowedCIDRs)
		// Entries the API would refuse are sent as typed, for its message
		// naming the one at fault.
		if ps, err := keystore.ParseCIDRs(entries); err != nil || !slices.Equal(keystore.CIDRStrings(ps), keystore.CIDRStrings(cur.AllowedCIDRs)) {
			body.AllowedCIDRs = api.OptionalCIDRs{Set: true, CIDRs: entries} // none: null, any network
		}
	}
	if req.session.principal.Operator {
		if form.Tier != cur.Tier {
			body.Tier = &form.Tier
		}
		switch form.Expires {
		case "":
		case "never":
			body.ExpiresAt = api.Expiry{Set: true}
		default:
			days, ok := expiryChoices[form.Expires]
			if !ok {
				c.renderKey(w, r, req, http.StatusBadRequest, "Choose an expiry from the list.", form)
				return
			}
			at := c.now().Add(time.Duration(days) * 24 * time.Hour).UTC().Truncate(time.Second)
			body.ExpiresAt = api.Expiry{Set: true, At: &at}
		}
	}
	if body.Name == nil && body.Scopes == nil && body.Tier == nil && !body.ExpiresAt.Set && !body.AllowedCIDRs.Set {
		c.renderKey(w, r, req, http.StatusBadRequest, "Nothing to change: the form is as the key is.", form)
		return
	}
	if fl := c.call(r, req, http.MethodPatch, "/v1/keys/"+url.PathEscape(id), body, nil); fl != nil {
		if fl.status == http.StatusBadRequest || fl.status == http.StatusForbidden || fl.status == http.StatusConflict {
			c.renderKey(w, r, req, fl.status, fl.text(), form)
			return
		}
		c.fail(w, r, req, fl)
		return
	}
	http.Redirect(w, r, keyPath(id)+"?done=updated", http.StatusSeeOther)
}

// splitCIDRs splits the networks field into its entries: one a line, or
// separated by commas or spaces; nil when there are none.
func splitCIDRs(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
}

// sameSet reports whether a and b hold the same strings.
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	in := make(map[string]bool, len(a))
	for _, x := range a {
		in[x] = true
	}
	for _, x := range b {
		if !in[x] {
			return false
		}
	}
	return true
}

// setDisabled disables or enables a key (POST /v1/keys/{id}/disable or
// /enable); enabling asks for the step-up verification under
// --admin-reverify, as creating and rolling do.
func (c *Console) setDisabled(action string) func(http.ResponseWriter, *http.Request, *request) {
	return func(w http.ResponseWriter, r *http.Request, req *request) {
		id := r.PathValue("id")
		if fl := c.call(r, req, http.MethodPost, "/v1/keys/"+url.PathEscape(id)+"/"+action, nil, nil); fl != nil {
			if fl.status == http.StatusForbidden || fl.status == http.StatusConflict || fl.status == http.StatusBadRequest {
				c.renderKey(w, r, req, fl.status, fl.text(), editForm{})
				return
			}
			c.fail(w, r, req, fl)
			return
		}
		http.Redirect(w, r, keyPath(id)+"?done="+action+"d", http.StatusSeeOther)
	}
}
