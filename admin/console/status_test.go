package console_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/admin/console"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
)

// The status page (the operator's only) shows this process's readiness
// checks, the bus's replicas live and fenced from the heartbeat set in
// Redis, and odin authz's decision counters with their rates when a
// metrics URL is configured; everything from outside is text.
func TestStatusPage(t *testing.T) {
	var allowed atomic.Int64
	allowed.Store(100)
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# TYPE odin_authz_decisions_total counter\n"+
			"odin_authz_decisions_total{credential=\"api_key\",result=\"allow\"} %d\n"+
			"odin_authz_decisions_total{credential=\"jwt\",result=\"allow\"} 10\n"+
			"odin_authz_decisions_total{credential=\"none\",result=\"<b>unauthorized</b>\"} 7\n", allowed.Load())
	}))
	defer metrics.Close()
	var redisURL, prefix string
	e := admintest.NewEnvWith(t, func(c *adminsvc.Config) {
		c.ConsoleAuthzMetricsURL = metrics.URL + "/metrics"
		redisURL, prefix = c.RedisURL, c.RedisPrefix
	})
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	raw := redis.NewClient(opts)
	defer raw.Close()
	now := time.Now()
	if err := raw.ZAdd(t.Context(), prefix+"replicas",
		redis.Z{Score: float64(now.UnixMilli()), Member: "replica-live"},
		redis.Z{Score: float64(now.Add(-10 * time.Second).UnixMilli()), Member: "<i>replica-gone</i>"}).Err(); err != nil {
		t.Fatal(err)
	}

	u := newBrowser(e)
	u.mustSignIn(e.Token("user_a", "", ""))
	p := u.get("/console/status")
	u.want(p, http.StatusForbidden, "for the operator")
	if strings.Contains(u.get("/console/keys").body, `href="/console/status"`) {
		t.Error("a user's pages link to the status page")
	}

	o := newBrowser(e)
	o.mustSignIn(admintest.OperatorToken)
	o.want(o.get("/console/keys"), http.StatusOK, `href="/console/status"`)
	p = o.get("/console/status")
	o.want(p, http.StatusOK, `id="ready">ready`, "<td>postgres</td>", "<td>redis</td>", "<td>jwks</td>",
		"<code>replica-live</code>", "&lt;i&gt;replica-gone&lt;/i&gt;", `<span class="badge revoked">fenced</span>`, `<span class="badge active">live</span>`,
		`<td>allow</td><td class="num">110</td><td class="num">—</td>`, "&lt;b&gt;unauthorized&lt;/b&gt;", "Rates appear from the next look")
	if strings.Contains(p.body, "<i>replica-gone") || strings.Contains(p.body, "<b>unauthorized") {
		t.Error("the status page renders markup from Redis or the metrics")
	}
	// The next look: rates over the time between the two reads.
	allowed.Add(200)
	p = o.get("/console/status")
	o.want(p, http.StatusOK, "since this page last read them", `<td>allow</td><td class="num">310</td>`)
	if strings.Contains(p.body, `<td>allow</td><td class="num">310</td><td class="num">—</td>`) {
		t.Errorf("no rate on the second read:\n%s", p.body)
	}

	// Metrics that cannot be read: said so, the rest of the page stands.
	metrics.Close()
	o.want(o.get("/console/status"), http.StatusOK, "could not be read", `id="ready">ready`)
}

// Without a metrics URL the page says where the decision rates are; a URL
// that is not http(s) is refused at start.
func TestStatusPageWithoutMetrics(t *testing.T) {
	e := admintest.NewEnv(t)
	o := newBrowser(e)
	o.mustSignIn(admintest.OperatorToken)
	o.want(o.get("/console/status"), http.StatusOK, "--console-authz-metrics-url", "Replicas on the bus")
	for _, u := range []string{"ftp://authz/metrics", "authz:9003/metrics", "http://"} {
		if _, err := console.New(console.Options{AuthzMetricsURL: u}); err == nil || !strings.Contains(err.Error(), "metrics URL") {
			t.Errorf("metrics URL %q: %v, want it refused", u, err)
		}
	}
}
