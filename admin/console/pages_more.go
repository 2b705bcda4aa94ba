package console

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/admin/api"
	"github.com/odin-scan/odin-authz/keystore"
)

// --- audit log ---

type auditPage struct {
	Operator bool
	Filter   auditFilter
	Events   []auditRow
	NextURL  string
	Error    string
}

func (auditPage) title() string { return "Audit log" }

// auditFilter is the audit log's filter, from the query string; Since and
// Until are dates (YYYY-MM-DD, UTC), Until included.
type auditFilter struct {
	Action, Actor, Target, Owner, Since, Until string
}

// auditRow is an event with its details as compact JSON text.
type auditRow struct {
	keystore.AuditEvent
	DetailsText string
	KeyTarget   bool // the target is a key id: linked to its page
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, req *request) {
	q := r.URL.Query()
	f := auditFilter{Action: q.Get("action"), Actor: q.Get("actor"), Target: q.Get("target"), Owner: q.Get("owner"), Since: q.Get("since"), Until: q.Get("until")}
	params := url.Values{"limit": {"50"}}
	for k, v := range map[string]string{"action": f.Action, "actor": f.Actor, "target": f.Target, "cursor": q.Get("cursor")} {
		if v != "" {
			params.Set(k, v)
		}
	}
	if f.Owner != "" && req.session.principal.Operator {
		params.Set("owner", f.Owner)
	}
	v := auditPage{Operator: req.session.principal.Operator, Filter: f}
	for name, d := range map[string]string{"since": f.Since, "until": f.Until} {
		if d == "" {
			continue
		}
		day, err := time.Parse(time.DateOnly, d)
		if err != nil {
			v.Error = name + " must be a date (YYYY-MM-DD)"
			c.render(w, r, http.StatusBadRequest, "audit", req, v)
			return
		}
		if name == "until" {
			day = day.Add(24 * time.Hour) // the whole day
		}
		params.Set(name, day.Format(time.RFC3339))
	}
	var page api.AuditPage
	if fl := c.call(r, req, http.MethodGet, "/v1/audit-log?"+params.Encode(), nil, &page); fl != nil {
		if fl.status == http.StatusBadRequest {
			v.Error = fl.message
			c.render(w, r, http.StatusBadRequest, "audit", req, v)
			return
		}
		c.fail(w, r, req, fl)
		return
	}
	for _, ev := range page.Events {
		row := auditRow{AuditEvent: ev, KeyTarget: strings.HasPrefix(ev.Target, "key_")}
		if len(ev.Details) > 0 {
			// As written: html/template escapes the text, so JSON's own
			// \u003c escaping would only make it unreadable.
			var b strings.Builder
			enc := json.NewEncoder(&b)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(ev.Details)
			row.DetailsText = strings.TrimSpace(b.String())
		}
		v.Events = append(v.Events, row)
	}
	if page.NextCursor != "" {
		next := url.Values{}
		for k, vs := range q {
			next[k] = vs
		}
		next.Set("cursor", page.NextCursor)
		v.NextURL = Path + "audit?" + next.Encode()
	}
	c.render(w, r, http.StatusOK, "audit", req, v)
}

// --- sessions ---

type sessionsPage struct {
	Operator  bool
	SessionID string // the caller's own Clerk session, if any
	Done      string
	Error     string
}

func (sessionsPage) title() string { return "Sessions" }

func (c *Console) sessionsPage(w http.ResponseWriter, r *http.Request, req *request) {
	p := req.session.principal
	v := sessionsPage{Operator: p.Operator, SessionID: p.SessionID}
	if sid := r.URL.Query().Get("revoked"); sid != "" {
		v.Done = "Session " + sid + " logged out: its tokens are refused from now on."
	}
	c.render(w, r, http.StatusOK, "sessions", req, v)
}

// revokeSession logs a Clerk session out (POST /v1/sessions/{sid}/revoke):
// the operator any, a user their own, which ends this console session too.
func (c *Console) revokeSession(w http.ResponseWriter, r *http.Request, req *request) {
	p := req.session.principal
	sid := strings.TrimSpace(r.PostFormValue("sid"))
	if fl := c.call(r, req, http.MethodPost, "/v1/sessions/"+url.PathEscape(sid)+"/revoke", nil, nil); fl != nil {
		if fl.status == http.StatusBadRequest || fl.status == http.StatusNotFound {
			c.render(w, r, fl.status, "sessions", req, sessionsPage{Operator: p.Operator, SessionID: p.SessionID, Error: fl.message})
			return
		}
		c.fail(w, r, req, fl)
		return
	}
	http.Redirect(w, r, Path+"sessions?"+url.Values{"revoked": {sid}}.Encode(), http.StatusSeeOther)
}
