package admin_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// failFrom sends a failing request from the client that X-Forwarded-For
// names (the test's peer is 127.0.0.1) and returns its status.
func failFrom(t *testing.T, url, xff string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/v1/keys", nil)
	req.Header.Set("Authorization", "Bearer wrong-token")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// spend fails 20 times (the default burst) from xff, each a 401.
func spend(t *testing.T, url, xff string) {
	t.Helper()
	for i := range 20 {
		if got := failFrom(t, url, xff); got != 401 {
			t.Fatalf("failure %d from %q: %d, want 401", i, xff, got)
		}
	}
}

// Behind a trusted load balancer every request comes from its address: the
// throttle counts the client it names in X-Forwarded-For, so one guessing
// client does not lock out the others, and a client cannot pick its own
// address by writing X-Forwarded-For (the proxy appends to it).
func TestThrottleCountsClientsBehindTrustedProxies(t *testing.T) {
	e := newEnv(t)
	cfg := e.Config
	cfg.TrustedProxies = []string{"127.0.0.1", "10.0.0.0/8"}
	srv := httptest.NewServer(serviceOn(t, cfg).Handler())
	t.Cleanup(srv.Close)

	spend(t, srv.URL, "203.0.113.1")
	if got := failFrom(t, srv.URL, "203.0.113.1"); got != 429 {
		t.Fatalf("client 1 past its budget: %d, want 429", got)
	}
	if got := failFrom(t, srv.URL, "203.0.113.2"); got != 401 {
		t.Errorf("client 2 behind the same proxy: %d, want 401 (its own budget)", got)
	}
	// Client 1 writes a fresh address to the left of what the proxy appends.
	if got := failFrom(t, srv.URL, "198.51.100.77, 203.0.113.1"); got != 429 {
		t.Errorf("client 1 with a forged X-Forwarded-For: %d, want 429", got)
	}
	// A chain of trusted proxies: the rightmost untrusted entry counts.
	if got := failFrom(t, srv.URL, "203.0.113.1, 10.1.2.3"); got != 429 {
		t.Errorf("client 1 through two proxies: %d, want 429", got)
	}
}

// From a peer that is not a trusted proxy X-Forwarded-For is ignored: a
// client cannot escape the throttle by naming a new address each time.
func TestThrottleIgnoresUntrustedForwardedFor(t *testing.T) {
	e := newEnv(t)
	cfg := e.Config
	cfg.TrustedProxies = []string{"10.0.0.0/8"} // not the test's 127.0.0.1
	srv := httptest.NewServer(serviceOn(t, cfg).Handler())
	t.Cleanup(srv.Close)
	for i := range 20 {
		if got := failFrom(t, srv.URL, "203.0.113."+string(rune('0'+i%10))); got != 401 {
			t.Fatalf("failure %d: %d", i, got)
		}
	}
	if got := failFrom(t, srv.URL, "198.51.100.1"); got != 429 {
		t.Fatalf("an untrusted peer's X-Forwarded-For was believed: %d, want 429", got)
	}
}
