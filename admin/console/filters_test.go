package console_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/keystore"
)

// The list filters by "unused for" (choices or a custom age) and
// "expiring within", through the API's own filters, and shows each key's
// last use and its checks over 24 hours and 30 days.
func TestKeysFilters(t *testing.T) {
	e := admintest.NewEnv(t)
	ctx := context.Background()
	mk := func(name string, expiresIn time.Duration) string {
		body := map[string]any{"name": name, "scopes": []string{}, "user_id": "user_a"}
		if expiresIn > 0 {
			body["expires_at"] = time.Now().Add(expiresIn).UTC().Format(time.RFC3339)
		}
		r := e.Do("POST", "/v1/keys", admintest.OperatorToken, body)
		e.MustStatus(r, http.StatusCreated)
		return r.Str("id")
	}
	const day = 24 * time.Hour
	busy, idle, soon, later := mk("busy key", 0), mk("idle key", 0), mk("soon key", 3*day), mk("later key", 20*day)
	now := time.Now()
	hour := now.UTC().Truncate(time.Hour)
	long := now.Add(-100 * day)
	if err := e.Store.RecordUsage(ctx, []keystore.Usage{
		{KeyID: busy, Hour: hour, Count: 5, LastUsed: now.Add(-time.Minute)},
		{KeyID: busy, Hour: hour.Add(-48 * time.Hour), Count: 7, LastUsed: now.Add(-48 * time.Hour)},
		{KeyID: idle, Hour: long.UTC().Truncate(time.Hour), Count: 3, LastUsed: long},
	}); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(e)
	b.mustSignIn(e.Token("user_a", "", ""))
	p := b.get("/console/keys")
	b.want(p, http.StatusOK, "Checks 24 h", "Checks 30 d", `<td class="num">5</td>`, `<td class="num">12</td>`)

	shows := func(path string, want ...string) {
		t.Helper()
		p := b.get(path)
		b.want(p, http.StatusOK)
		for _, id := range []string{busy, idle, soon, later} {
			in := false
			for _, w := range want {
				in = in || w == id
			}
			if strings.Contains(p.body, "/console/keys/"+id+`"`) != in {
				t.Errorf("%s: key %s listed %v, want %v", path, id, !in, in)
			}
		}
	}
	shows("/console/keys?unused=90d", idle)
	shows("/console/keys?unused=30d", idle)
	shows("/console/keys?unused=custom&unused_custom=1h", idle) // the others were created now or used a minute ago
	shows("/console/keys?unused=custom&unused_custom=", busy, idle, soon, later)
	shows("/console/keys?expiring=7d", soon)
	shows("/console/keys?expiring=30d", soon, later)
	shows("/console/keys?expiring=30d&unused=90d")
	shows("/console/keys?expiring=1y&unused=bogus", busy, idle, soon, later) // not a choice: no filter
	b.want(b.get("/console/keys?expiring=7d"), http.StatusOK, `value="7d" selected`, "(filtered)")

	// A custom age the API refuses: its message, the filter kept, no keys.
	p = b.get("/console/keys?unused=custom&unused_custom=%3Cb%3Esoon")
	b.want(p, http.StatusBadRequest, `id="filter-error"`, "unused_for", `value="&lt;b&gt;soon"`)
	if strings.Contains(p.body, "<b>soon") {
		t.Error("the custom filter value is rendered as markup")
	}
}
