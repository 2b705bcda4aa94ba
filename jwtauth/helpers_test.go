package jwtauth

import (
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/testenv"

	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/prometheus/client_golang/prometheus"
)

// testEnv is a dev identity provider served over real HTTP and a Verifier
// pointed at it.
type testEnv struct {
	idp  *devissuer.Provider
	srv  *httptest.Server
	v    *Verifier
	reg  *prometheus.Registry
	logs *testenv.LogBuffer
}

// envOptions tune newEnv; the zero value is an RS256 provider and a
// verifier with test-friendly timings.
type envOptions struct {
	idp    devissuer.Options
	config func(*Config)
	// before runs after the server starts and before New.
	before func(*devissuer.Provider)
}

func newEnv(t testing.TB, o envOptions) *testEnv {
	t.Helper()
	idp, err := devissuer.New(o.idp)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(idp.Handler())
	t.Cleanup(srv.Close)
	if o.before != nil {
		o.before(idp)
	}
	cfg := Config{
		JWKSURL:            srv.URL + devissuer.JWKSPath,
		Issuer:             idp.Issuer(),
		FetchTimeout:       2 * time.Second,
		MinRefreshInterval: time.Hour, // tests about refreshes lower it
	}
	if o.config != nil {
		o.config(&cfg)
	}
	e := &testEnv{idp: idp, srv: srv, reg: prometheus.NewRegistry(), logs: &testenv.LogBuffer{}}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.v, err = New(t.Context(), cfg, logger, e.reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

// mint mints a token or fails the test.
func (e *testEnv) mint(t testing.TB, c devissuer.Claims) string {
	t.Helper()
	tok, err := e.idp.Mint(c)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	return tok
}

// counter returns the value of the counter name{label="value"} (label may
// be empty for an unlabelled counter).
func (e *testEnv) counter(t testing.TB, name, label, value string) float64 {
	t.Helper()
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					match = true
				}
			}
			if match {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("metric %s{%s=%q} not found", name, label, value)
	return 0
}

// forge builds a compact JWS from a header, a payload segment taken from a
// real token, and a signature segment, without signing anything.
func forge(t testing.TB, header map[string]any, payloadSeg, sigSeg string) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(h) + "." + payloadSeg + "." + sigSeg
}

// segments splits a compact JWS.
func segments(t testing.TB, tok string) (header, payload, sig string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments", len(parts))
	}
	return parts[0], parts[1], parts[2]
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
