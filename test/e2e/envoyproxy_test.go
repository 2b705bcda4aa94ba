package e2e

import (
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/odin-scan/odin-authz/test/envoyproxy"
)

// TestEnvoyProxy runs the cases through the Envoy stand-in, which asks the
// replica over real gRPC Check as Envoy's ext_authz filter would. Like
// envoy/envoy-grpc.yaml it answers an unreachable authz with
// status_on_error 503; the JSON body Envoy adds there comes from that
// file's local_reply_config, which the stand-in does not model.
func TestEnvoyProxy(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "none")
	up := startEcho(t)
	upstream, _ := url.Parse("http://" + up.Addr)
	var mu sync.Mutex
	var metadata []map[string]any
	start := func(authzAddr string) string {
		conn, err := grpc.NewClient(authzAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		p, err := envoyproxy.New(envoyproxy.Options{
			Upstream:      upstream,
			Authz:         authv3.NewAuthorizationClient(conn),
			Timeout:       time.Second, // envoy-grpc.yaml has 0.5 s; the race detector needs slack
			StatusOnError: 503,
			Observe: func(_ *authv3.CheckRequest, resp *authv3.CheckResponse, err error) {
				if err == nil && resp.GetStatus().GetCode() == 0 {
					mu.Lock()
					metadata = append(metadata, resp.GetDynamicMetadata().AsMap())
					mu.Unlock()
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(p)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	runCases(t, w, front{
		allow:             start(w.authz.GRPC),
		outage:            start(w.outage.GRPC),
		unreachable:       start(w.dead),
		upstream:          up,
		unreachableStatus: 503,
		output:            func() string { return "" },
	})

	t.Run("dynamic metadata on allow", func(t *testing.T) {
		mu.Lock()
		defer mu.Unlock()
		if len(metadata) == 0 {
			t.Fatal("no allowed Check seen")
		}
		want := map[string]any{
			"auth_method": "api_key", "subject": "user_alice", "org_id": "org_acme",
			"key_id": w.keys.validID, "scopes": "scans:read scans:write", "tier": "pro",
		}
		if diff := cmp.Diff(want, metadata[0]); diff != "" {
			t.Errorf("dynamic metadata (-want, +got):\n%s", diff)
		}
	})
}
