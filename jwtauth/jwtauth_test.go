package jwtauth

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

func TestLooksLikeJWT(t *testing.T) {
	tests := map[string]bool{
		"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln": true,
		"a.b.c":                 true,
		"A-_.0-9._":             true,
		"":                      false,
		"a.b":                   false,
		"a.b.c.d":               false,
		".b.c":                  false,
		"a..c":                  false,
		"a.b.":                  false,
		"a.b.c=":                false,
		"a.b+.c":                false,
		"a.b/.c":                false,
		"a .b.c":                false,
		"odin_sk_AbCdEf0123456": false,
		"Bearer a.b.c":          false,
		"a.b.c\n":               false,
		"a.b.\xffc":             false,
	}
	got := map[string]bool{}
	for s := range tests {
		got[s] = LooksLikeJWT(s)
	}
	if diff := cmp.Diff(tests, got); diff != "" {
		t.Errorf("LooksLikeJWT (-want, +got):\n%s", diff)
	}
	// Every byte, in every segment: only the base64url alphabet passes.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for c := range 256 {
		b := string([]byte{byte(c)})
		for _, s := range []string{b + ".b.c", "a." + b + ".c", "a.b." + b, "a" + b + ".b.c"} {
			want := strings.Contains(alphabet, b) // a dot here makes a fourth or an empty segment
			if got := LooksLikeJWT(s); got != want {
				t.Errorf("LooksLikeJWT(%q) = %v, want %v", s, got, want)
			}
		}
	}
}

func TestConfigRefused(t *testing.T) {
	base := Config{JWKSURL: "https://clerk.example/.well-known/jwks.json", Issuer: "https://clerk.example"}
	tests := map[string]func(*Config){
		"no JWKSURL":             func(c *Config) { c.JWKSURL = "" },
		"JWKSURL not http":       func(c *Config) { c.JWKSURL = "file:///etc/jwks.json" },
		"JWKSURL without host":   func(c *Config) { c.JWKSURL = "https:///jwks.json" },
		"no Issuer":              func(c *Config) { c.Issuer = "" },
		"HS256":                  func(c *Config) { c.Algorithms = []string{"RS256", "HS256"} },
		"HS512":                  func(c *Config) { c.Algorithms = []string{"HS512"} },
		"none":                   func(c *Config) { c.Algorithms = []string{"none"} },
		"lower-case rs256":       func(c *Config) { c.Algorithms = []string{"rs256"} },
		"EdDSA (unsupported)":    func(c *Config) { c.Algorithms = []string{"EdDSA"} },
		"negative Leeway":        func(c *Config) { c.Leeway = -time.Second },
		"huge Leeway":            func(c *Config) { c.Leeway = time.Hour },
		"negative FetchTimeout":  func(c *Config) { c.FetchTimeout = -1 },
		"negative RefreshPeriod": func(c *Config) { c.RefreshInterval = -1 },
		"negative MinRefresh":    func(c *Config) { c.MinRefreshInterval = -1 },
	}
	for name, mutate := range tests {
		cfg := base
		mutate(&cfg)
		if v, err := New(t.Context(), cfg, nil, nil); err == nil || v != nil {
			t.Errorf("%s: New = %v, %v; want an error", name, v, err)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	got, err := Config{JWKSURL: "http://127.0.0.1/jwks", Issuer: "i", Algorithms: []string{"ES256", "RS256", "ES256"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		JWKSURL: "http://127.0.0.1/jwks", Issuer: "i", Algorithms: []string{"ES256", "RS256"},
		Leeway: DefaultLeeway, RefreshInterval: DefaultRefreshInterval,
		MinRefreshInterval: DefaultMinRefreshInterval, FetchTimeout: DefaultFetchTimeout,
		Claims: ClaimsMapping{TierClaim: "tier", DefaultTier: "free"},
	}
	if diff := cmp.Diff(want, got, cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "HTTPClient" }, cmp.Ignore())); diff != "" {
		t.Errorf("defaults (-want, +got):\n%s", diff)
	}
	if got.HTTPClient == nil {
		t.Error("no default HTTP client")
	}
}

func TestNewCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := New(ctx, Config{JWKSURL: "https://clerk.example/jwks", Issuer: "i"}, nil, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("New with a canceled context = %v, want context.Canceled", err)
	}
}

func TestMetricsRegistration(t *testing.T) {
	e := newEnv(t, envOptions{})
	// Every label value exists from the start, so dashboards see zeros.
	for _, r := range allReasons {
		e.counter(t, "odin_jwt_verifications_total", "result", r)
	}
	if got := e.counter(t, "odin_jwt_jwks_fetches_total", "result", "ok"); got != 1 {
		t.Errorf("fetches{ok} = %v, want 1", got)
	}
	if got := e.counter(t, "odin_jwt_jwks_keys", "", ""); got != 1 {
		t.Errorf("jwks_keys = %v, want 1", got)
	}
	if got := e.counter(t, "odin_jwt_jwks_age_seconds", "", ""); got < 0 || got > 60 {
		t.Errorf("jwks_age_seconds = %v, want a fresh set", got)
	}
	// A second verifier on the same registry is a configuration error, not a panic.
	cfg := e.v.cfg
	if _, err := New(t.Context(), cfg, nil, e.reg); err == nil || !strings.Contains(err.Error(), "register metrics") {
		t.Errorf("second registration: err = %v, want a registration error", err)
	}
}

// TestAbandonedWait: a caller whose context ends stops waiting, and the
// verification it joined still completes for the others. The first caller
// does the work itself when no JWKS fetch is needed (a bounded amount of
// CPU), so the caller that leaves here is one that joined its flight.
func TestAbandonedWait(t *testing.T) {
	e := newEnv(t, envOptions{})
	tok := e.mint(t, devissuer.Claims{})
	key := sha256.Sum256([]byte(tok))
	release := make(chan struct{})
	e.v.beforeSignatureCheck = func() { <-release }
	done := make(chan error, 1)
	go func() {
		_, err := e.v.Verify(t.Context(), tok)
		done <- err
	}()
	waitFor(t, 5*time.Second, "the first caller to start", func() bool { return e.v.flights.callers(key) == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := e.v.Verify(ctx, tok); !errors.Is(err, context.DeadlineExceeded) || Reason(err) != ReasonCanceled {
		t.Fatalf("Verify with an expiring context = %v, want DeadlineExceeded", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Verify of the caller that stayed: %v", err)
	}
}

// TestAbandonedWaitDuringFetch: a first caller whose token needs a JWKS
// fetch (a kid the loaded set lacks) stops waiting when its context ends,
// and the fetch it started goes on for the next caller.
func TestAbandonedWaitDuringFetch(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *Config) { c.MinRefreshInterval = time.Millisecond }})
	if _, err := e.idp.Rotate(); err != nil {
		t.Fatal(err)
	}
	tok := e.mint(t, devissuer.Claims{}) // signed with the new key, unknown to the verifier
	e.idp.SetDelay(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := e.v.Verify(ctx, tok); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Verify with an expiring context = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("the first caller waited %v for a fetch after its context ended", d)
	}
	if _, err := e.v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("Verify after the first caller left: %v", err)
	}
}

// TestPanicInVerificationIsInternal: a panic during a verification, run on
// the caller's goroutine, is recovered and refuses the token as internal.
func TestPanicInVerificationIsInternal(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.v.beforeSignatureCheck = func() { panic("boom") }
	_, err := e.v.Verify(t.Context(), e.mint(t, devissuer.Claims{}))
	if !errors.Is(err, ErrInvalidToken) || Reason(err) != ReasonInternal {
		t.Fatalf("Verify with a panicking check = %v, want ErrInvalidToken (internal)", err)
	}
}

// FuzzVerify feeds arbitrary strings to Verify: it must never panic (a
// recovered panic shows as ReasonInternal) and never accept a token that
// was not signed by the provider.
func FuzzVerify(f *testing.F) {
	e := newEnv(f, envOptions{})
	valid, err := e.idp.Mint(devissuer.Claims{})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		valid, "", "a.b.c", "e30.e30.e30", "eyJhbGciOiJub25lIn0.e30.",
		"eyJhbGciOiJSUzI1NiIsImtpZCI6W119.e30.AA", "eyJhbGciOiJSUzI1NiIsImNyaXQiOm51bGx9.e30.AA",
		strings.Repeat("A", MaxTokenSize+1),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		s, err := e.v.Verify(context.Background(), token)
		if Reason(err) == ReasonInternal {
			t.Fatalf("Verify(%q) hit an internal error: %v", token, err)
		}
		if err == nil && token != valid {
			t.Fatalf("Verify accepted a token the provider did not mint: %q (%+v)", token, s)
		}
	})
}
