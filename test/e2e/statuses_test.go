package e2e

import (
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/extauthz"
)

// statusAuthz is a forward-auth server that denies with the outcome the
// original path names (/deny/403, …), rendered by extauthz's own Decision,
// and allows /allow. odin authz cannot yet be made to answer 403 or 429, but
// the proxies must already carry them; it counts the asks it receives.
type statusAuthz struct {
	addr string
	asks atomic.Int64
}

var denialPaths = map[string]extauthz.Outcome{
	"/deny/401": extauthz.DenyUnauthorized,
	"/deny/403": extauthz.DenyForbidden,
	"/deny/429": extauthz.DenyRateLimited,
	"/deny/503": extauthz.DenyUnavailable,
	"/deny/500": extauthz.DenyMisconfigured,
}

// startStatusAuthz answers as odin authz would for the path the proxy
// forwards as mode (--forwarded-headers) says.
func startStatusAuthz(t *testing.T, mode string) *statusAuthz {
	t.Helper()
	s := &statusAuthz{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.asks.Add(1)
		req := extauthz.ForwardedRequest(r, "", mode)
		o, ok := denialPaths[req.Path]
		if !ok {
			w.WriteHeader(http.StatusOK)
			return
		}
		d := extauthz.Decision{Outcome: o, RequestID: r.Header.Get("x-request-id"), RetryAfter: 7 * time.Second}
		for _, p := range d.DenialHeaders() {
			w.Header().Set(p.Name, p.Value)
		}
		w.WriteHeader(o.HTTPStatus())
		_, _ = w.Write(d.Body(time.Now()))
	}))
	t.Cleanup(srv.Close)
	s.addr = srv.Listener.Addr().String()
	return s
}

// TestDenialStatuses checks that every denial status of the contract reaches the client
// through NGINX and Caddy with its JSON body and headers. NGINX asks twice
// per denial (auth_request, then @odin_denied for the body); Caddy once.
func TestDenialStatuses(t *testing.T) {
	t.Parallel()
	proxies := []struct {
		name         string
		mode         string
		start        func(t *testing.T, authz, upstream string) string
		asksByDenial int64
	}{
		{"nginx", shippedMode(t, nginxConf), func(t *testing.T, authz, upstream string) string {
			bin := findTool(t, "nginx", "ODIN_NGINX_BIN", "nginx", "/usr/sbin/nginx")
			shipped, err := os.ReadFile(nginxConf)
			if err != nil {
				t.Fatal(err)
			}
			checkNGINXModules(t, bin, string(shipped))
			_, base := startNGINX(t, bin, string(shipped), authz, upstream)
			return base
		}, 2},
		{"caddy", shippedMode(t, caddyfile), func(t *testing.T, authz, upstream string) string {
			_, base := startCaddy(t, findCaddy(t), authz, upstream)
			return base
		}, 1},
	}
	tests := []struct {
		path       string
		status     int
		code       string
		retryAfter string
	}{
		{"/deny/401", 401, "UNAUTHORIZED", ""},
		{"/deny/403", 403, "FORBIDDEN", ""},
		{"/deny/429", 429, "RATE_LIMITED", "7"},
		{"/deny/503", 503, "UNAVAILABLE", ""},
		{"/deny/500", 500, "INTERNAL", ""},
	}
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			t.Parallel()
			authz := startStatusAuthz(t, px.mode)
			up := startEcho(t)
			base := px.start(t, authz.addr, up.Addr)
			if got := send(t, "GET", base+"/allow", nil, ""); got.status != 200 || up.hits.Load() != 1 {
				t.Fatalf("/allow: status %d, upstream hits %d; want 200 from the upstream", got.status, up.hits.Load())
			}
			for _, tt := range tests {
				t.Run(tt.path, func(t *testing.T) {
					asks, hits := authz.asks.Load(), up.hits.Load()
					got := send(t, "POST", base+tt.path, http.Header{"Api-Key": {"odin_sk_whatever"}}, "{}")
					checkDenial(t, got, tt.status, tt.code)
					if ra := got.header.Get("retry-after"); ra != tt.retryAfter {
						t.Errorf("retry-after = %q, want %q", ra, tt.retryAfter)
					}
					if n := up.hits.Load() - hits; n != 0 {
						t.Errorf("a denied request reached the upstream (%d requests)", n)
					}
					if n := authz.asks.Load() - asks; n != px.asksByDenial {
						t.Errorf("%s asked odin authz %d times for one denial, want %d", px.name, n, px.asksByDenial)
					}
				})
			}
		})
	}
}
