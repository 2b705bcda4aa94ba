package admin_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/admin/webhooks"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/keystore"
)

const outgoingSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// failingReceiver answers every request 500 and counts them.
func failingReceiver(t *testing.T) (string, *atomic.Int64) {
	n := &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, n
}

// withWebhooks sends session.revoked events to url, one attempt each, and
// skips every other type.
func withWebhooks(url string) func(*adminsvc.Config) {
	return func(c *adminsvc.Config) {
		c.Webhooks = webhooks.Options{
			Endpoints:    []webhooks.Endpoint{{Name: "dashboard", URL: url, Secret: outgoingSecret, Types: []string{keystore.ActionSessionRevoked}}},
			MaxAttempts:  1,
			PollInterval: 20 * time.Millisecond,
		}
	}
}

// waitForDelivery polls the operator's listing until an event of that type
// is in that state, and returns it.
func waitForDelivery(t *testing.T, e *env, status, typ string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := e.Do("GET", "/v1/webhooks/deliveries?status="+status+"&type="+typ, admintest.OperatorToken, nil)
		e.MustStatus(r, 200)
		if ds, _ := r.Body["deliveries"].([]any); len(ds) > 0 {
			return ds[0].(map[string]any)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s %s delivery after 10s: %s", status, typ, r.Raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A failing endpoint's event is failed after the last attempt and shows
// so to the operator, who may retry it; only the operator.
func TestWebhookDeliveries(t *testing.T) {
	url, hits := failingReceiver(t)
	e := newEnvWith(t, withWebhooks(url+"/hook?token=secret-in-query"))
	e.MustStatus(e.Do("POST", "/v1/sessions/sess_w9/revoke", admintest.OperatorToken, nil), 200)
	e.MustStatus(e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "CI", "scopes": []string{}, "user_id": "user_a"}), 201)

	failed := waitForDelivery(t, e, keystore.OutboxFailed, keystore.ActionSessionRevoked)
	if failed["attempts"] != float64(1) || failed["last_status"] != float64(500) || failed["last_error"] != "dashboard: HTTP 500" ||
		failed["payload"].(map[string]any)["data"].(map[string]any)["session"].(map[string]any)["id"] != "sess_w9" {
		t.Errorf("failed delivery: %v", failed)
	}
	skipped := waitForDelivery(t, e, keystore.OutboxSkipped, keystore.ActionKeyCreated)

	id := fmt.Sprint(int64(failed["id"].(float64)))
	alice := e.Token("user_a", "", "")
	for _, c := range []struct {
		method, path, bearer string
		status               int
	}{
		{"GET", "/v1/webhooks/deliveries", alice, 403},
		{"POST", "/v1/webhooks/deliveries/" + id + "/retry", alice, 403},
		{"GET", "/v1/webhooks/deliveries", e.Token("user_b", "org_a", "admin"), 403},
		{"GET", "/v1/webhooks/deliveries", "", 401},
		{"POST", "/v1/webhooks/deliveries/" + id + "/retry", "", 401},
		{"GET", "/v1/webhooks/deliveries?status=lost", admintest.OperatorToken, 400},
		{"GET", "/v1/webhooks/deliveries?type=key.eaten", admintest.OperatorToken, 400},
		{"POST", "/v1/webhooks/deliveries/999999/retry", admintest.OperatorToken, 404},
		{"POST", "/v1/webhooks/deliveries/nope/retry", admintest.OperatorToken, 404},
		{"POST", "/v1/webhooks/deliveries/" + fmt.Sprint(int64(skipped["id"].(float64))) + "/retry", admintest.OperatorToken, 409},
	} {
		r := e.Do(c.method, c.path, c.bearer, nil)
		if r.Status != c.status {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, r.Status, r.Raw, c.status)
		}
	}
	before := hits.Load()
	r := e.Do("POST", "/v1/webhooks/deliveries/"+id+"/retry", admintest.OperatorToken, nil)
	e.MustStatus(r, 200)
	if r.Str("status") != keystore.OutboxPending {
		t.Errorf("retried: %s", r.Raw)
	}
	deadline := time.Now().Add(10 * time.Second)
	for hits.Load() == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	d := waitForDelivery(t, e, keystore.OutboxFailed, keystore.ActionSessionRevoked)
	if hits.Load() == before || d["attempts"] != float64(2) {
		t.Errorf("the retry made no attempt: %v", d)
	}
	if strings.Contains(e.Logs.String(), "secret-in-query") || strings.Contains(e.Logs.String(), outgoingSecret) {
		t.Error("the logs show the endpoint's URL or secret")
	}
}

// contractWebhookDeliveries exercises the delivery endpoints through the
// contract client.
func contractWebhookDeliveries(t *testing.T, client func(string) contractClient) {
	url, _ := failingReceiver(t)
	e := newEnvWith(t, withWebhooks(url))
	c := client(e.URL)
	op := admintest.OperatorToken
	c.do(t, call{method: "POST", path: "/v1/keys", bearer: op, status: 201, body: map[string]any{"name": "x", "scopes": []string{}, "user_id": "user_w"}})
	c.do(t, call{method: "POST", path: "/v1/sessions/sess_wc/revoke", bearer: op, status: 200})
	skipped := waitForDelivery(t, e, keystore.OutboxSkipped, keystore.ActionKeyCreated)
	failed := waitForDelivery(t, e, keystore.OutboxFailed, keystore.ActionSessionRevoked)
	path := "/v1/webhooks/deliveries"
	c.do(t, call{method: "GET", path: path, bearer: op, status: 200})
	r := c.do(t, call{method: "GET", path: path + "?status=failed&type=session.revoked&limit=1", bearer: op, status: 200})
	if next := r.Str("next_cursor"); next != "" {
		t.Errorf("one failed delivery, yet a next page: %s", r.Raw)
	}
	r = c.do(t, call{method: "GET", path: path + "?limit=1", bearer: op, status: 200})
	if next := r.Str("next_cursor"); next == "" {
		t.Errorf("two deliveries, no next page at limit 1: %s", r.Raw)
	} else {
		c.do(t, call{method: "GET", path: path + "?limit=1&cursor=" + next, bearer: op, status: 200})
	}
	for _, q := range []string{"status=lost", "type=key.eaten", "limit=0"} {
		c.do(t, call{method: "GET", path: path + "?" + q, bearer: op, status: 400, expect: expectation{requestInvalid: true}})
	}
	c.do(t, call{method: "GET", path: path + "?cursor=bogus", bearer: op, status: 400})
	c.do(t, call{method: "GET", path: path, status: 401, expect: expectation{requestInvalid: true}})
	c.do(t, call{method: "GET", path: path, bearer: e.Token("user_w", "", ""), status: 403})
	retry := func(id any) string { return fmt.Sprintf("%s/%d/retry", path, int64(id.(float64))) }
	c.do(t, call{method: "POST", path: retry(failed["id"]), bearer: op, status: 200})
	c.do(t, call{method: "POST", path: retry(skipped["id"]), bearer: op, status: 409})
	c.do(t, call{method: "POST", path: path + "/424242/retry", bearer: op, status: 404})
	c.do(t, call{method: "POST", path: retry(failed["id"]), status: 401, expect: expectation{requestInvalid: true}})
	c.do(t, call{method: "POST", path: retry(failed["id"]), bearer: e.Token("user_w", "", ""), status: 403})
}
