package extauthz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// TestMain drops the package's template database when the tests (or a fuzz
// worker) end.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// malformedReasons are the only reasons ExtractCredential may give.
var malformedReasons = map[string]bool{
	"not_bearer": true, "empty": true, "oversized": true, "non_printable": true,
	"ambiguous": true, "api_key_header_not_a_key": true,
}

// printableToken reports whether v is what a credential may be: non-empty,
// at most MaxCredentialLen, printable ASCII without spaces.
func printableToken(v string) bool {
	if v == "" || len(v) > extauthz.MaxCredentialLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] > '~' {
			return false
		}
	}
	return true
}

// bearerCarries reports whether an Authorization value is "Bearer <v>"
// (scheme in any case, then a space or tab, whitespace trimmed around).
func bearerCarries(authz, v string) bool {
	a := strings.TrimSpace(authz)
	return len(a) > 7 && strings.EqualFold(a[:6], "bearer") && (a[6] == ' ' || a[6] == '\t') &&
		strings.TrimSpace(a[7:]) == v
}

// FuzzExtractCredential feeds arbitrary authorization and api-key values
// (empty means absent): the contract's credential rules must hold for every answer.
func FuzzExtractCredential(f *testing.F) {
	f.Fuzz(func(t *testing.T, authz, apiKey string) {
		h := extauthz.MapHeaders{}
		if authz != "" {
			h["authorization"] = authz
		}
		if apiKey != "" {
			h["api-key"] = apiKey
		}
		c := extauthz.ExtractCredential(h)
		if c.InAuthorization != (authz != "") || c.InAPIKey != (apiKey != "") {
			t.Fatalf("InAuthorization, InAPIKey = %v, %v for %q, %q", c.InAuthorization, c.InAPIKey, authz, apiKey)
		}
		switch c.Kind {
		case extauthz.CredentialNone:
			if authz != "" || apiKey != "" || c.Value != "" {
				t.Fatalf("none for %q, %q (value %q)", authz, apiKey, c.Value)
			}
		case extauthz.CredentialMalformed:
			if c.Value != "" || !malformedReasons[c.Reason] {
				t.Fatalf("malformed with value %q, reason %q", c.Value, c.Reason)
			}
		case extauthz.CredentialAPIKey, extauthz.CredentialJWT:
			if !printableToken(c.Value) || strings.TrimSpace(c.Value) != c.Value || c.Reason != "" {
				t.Fatalf("%v value %q (reason %q) is not a trimmed printable token of at most 8 KiB", c.Kind, c.Value, c.Reason)
			}
			if c.InAuthorization && !bearerCarries(authz, c.Value) {
				t.Fatalf("%v value %q is not the bearer token of %q", c.Kind, c.Value, authz)
			}
			if c.InAPIKey && strings.TrimSpace(apiKey) != c.Value {
				t.Fatalf("%v value %q is not the api-key %q", c.Kind, c.Value, apiKey)
			}
			if (c.Kind == extauthz.CredentialAPIKey) != strings.HasPrefix(c.Value, keystore.KeyPrefix) {
				t.Fatalf("%v for %q", c.Kind, c.Value)
			}
			if c.Kind == extauthz.CredentialJWT && (c.InAPIKey || !c.InAuthorization) {
				t.Fatalf("a JWT taken from the api-key header (%q, %q)", authz, apiKey)
			}
		default:
			t.Fatalf("unknown kind %d", c.Kind)
		}

		// Each header alone, and the two headers agree on an API key.
		alone := func(name, v string) extauthz.Credential {
			return extauthz.ExtractCredential(extauthz.MapHeaders{name: v})
		}
		if authz != "" && apiKey != "" {
			a, k := alone("authorization", authz), alone("api-key", apiKey)
			if a.Value != "" && k.Value != "" && a.Value != k.Value && c.Kind != extauthz.CredentialMalformed {
				t.Fatalf("two different credentials %q and %q gave %v, want malformed", a.Value, k.Value, c.Kind)
			}
		}
		if c.Kind == extauthz.CredentialAPIKey {
			for _, eq := range []extauthz.Credential{alone("api-key", c.Value), alone("authorization", "BEARER "+c.Value)} {
				if eq.Kind != extauthz.CredentialAPIKey || eq.Value != c.Value {
					t.Fatalf("key %q is not read the same from both headers: %+v", c.Value, eq)
				}
			}
		}
	})
}

// forwardModes are the modes a seed's modeIndex picks. "auto" is no longer a
// mode (CheckForwarding refuses it at start); kept at its index so the
// committed seeds mean what they did, and refused as an unknown mode.
// httpToken is RFC 9110's token, the syntax of a method.
var httpToken = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

var forwardModes = []string{"", "auto", "original", "forwarded", "none"}

// FuzzForwardedRequest feeds a forward-auth subrequest arbitrary
// X-Forwarded-* and X-Original-* headers (a "\n" in a value makes a
// repeated header), a request target, a path prefix and a mode. Only the
// headers the mode names may decide the method and path, each exactly
// once; anything else is refused as misconfigured, never decided on a
// fallback.
func FuzzForwardedRequest(f *testing.F) {
	authz := extauthz.NewAuthorizer(extauthz.Options{}) // only ever asked about misconfigured requests
	f.Fuzz(func(t *testing.T, target, fwdMethod, fwdURI, origMethod, origURI, fwdHost, prefix string, modeIndex uint8) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // net/http answers 400 before any handler runs
		}
		mode := forwardModes[int(modeIndex)%len(forwardModes)]
		r := &http.Request{Method: http.MethodGet, URL: u, RequestURI: target, Host: "authz.internal", Header: http.Header{}}
		values := map[string][]string{}
		for name, v := range map[string]string{
			"X-Forwarded-Method": fwdMethod, "X-Forwarded-Uri": fwdURI, "X-Forwarded-Host": fwdHost,
			"X-Original-Method": origMethod, "X-Original-Uri": origURI,
		} {
			if v != "" {
				r.Header[name] = strings.Split(v, "\n")
				values[name] = r.Header[name]
			}
		}
		got := extauthz.ForwardedRequest(r, prefix, mode)

		want := extauthz.Request{Method: http.MethodGet, Path: u.RequestURI(), Host: r.Host}
		// read is what the mode's method and URI headers give: both there
		// exactly once, a token for a method; else why not.
		read := func(methodHeader, uriHeader string) {
			m, uri := values[methodHeader], values[uriHeader]
			switch {
			case len(m) > 1 || len(uri) > 1:
				want.Misconfigured = "forwarded_header_repeated"
			case len(m) == 0 || len(uri) == 0 || m[0] == "" || uri[0] == "":
				want.Misconfigured = "forwarded_header_missing"
			case !httpToken.MatchString(m[0]):
				want.Misconfigured = "forwarded_method_invalid"
			default:
				want.Method, want.Path = m[0], uri[0]
			}
		}
		switch mode {
		case "", "none":
			switch rest, ok := strings.CutPrefix(want.Path, prefix); {
			case fwdMethod != "" || fwdURI != "" || origMethod != "" || origURI != "":
				want.Misconfigured = "forwarded_header_unexpected"
			case prefix != "" && (!ok || !strings.HasPrefix(rest, "/")):
				want.Misconfigured = "path_prefix_missing"
			case prefix != "":
				want.Path = rest
			}
		case "original":
			read("X-Original-Method", "X-Original-Uri")
		case "forwarded":
			if h := values["X-Forwarded-Host"]; len(h) == 1 && h[0] != "" {
				want.Host = h[0]
			}
			read("X-Forwarded-Method", "X-Forwarded-Uri")
		default:
			want.Misconfigured = "forwarded_mode_unknown"
		}
		if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(extauthz.Request{}, "Headers", "Client")); diff != "" {
			t.Fatalf("ForwardedRequest(%q, %q, %q) (-want, +got):\n%s", target, prefix, mode, diff)
		}
		if got.Misconfigured != "" {
			d := authz.Decide(context.Background(), &got)
			if d.Outcome != extauthz.DenyMisconfigured || d.Reason != got.Misconfigured || d.Outcome.HTTPStatus() != http.StatusInternalServerError {
				t.Fatalf("a misconfigured request was decided %v (%s), want misconfigured (500)", d.Outcome, d.Reason)
			}
		}
	})
}

// keyPlaceholder and tokenPlaceholder in a seed's header values stand for
// the run's real key and real session token, so that committed seeds can
// present them. The other placeholders are tokens the issuer really signed
// that must still be refused: one without sid (it could never be logged
// out) and one without iat or nbf (its lifetime is unknown).
const (
	keyPlaceholder   = "{{key}}"
	tokenPlaceholder = "{{jwt}}"
	noSIDPlaceholder = "{{jwt-no-sid}}"
	noIATPlaceholder = "{{jwt-no-iat}}"
)

var freshRequestID = regexp.MustCompile(`^req-[0-9a-f]{24}$`)

// FuzzDecideInvalidCredential asks a real Authorizer (key cache on a real
// PostgreSQL database holding one key with scans:read, default policy, JWT
// sessions verified against a live JWKS that signed one real token with
// scans:read) about arbitrary authorization, api-key and x-request-id
// values, for GET or POST /v1/scans. Only the real key and the real token
// may be allowed, and only for GET; everything else is denied with the error
// body (401, never 503: every store is up), and no log line carries the key
// or the token.
func FuzzDecideInvalidCredential(f *testing.F) {
	ctx := context.Background()
	store := testenv.OpenStore(f, testenv.Postgres(f), pgstore.Options{MaxConns: 4})
	realKey, k, err := keystore.NewManager(store, nil, keystore.ManagerOptions{}).Create(ctx,
		keystore.Actor{ID: "fuzz"}, keystore.NewKey{UserID: "user_fuzz", Name: "fuzz", Scopes: []string{"scans:read"}})
	if err != nil {
		f.Fatal(err)
	}
	// A generous store timeout: a 503 here would be a bug, not load.
	cache, err := keystore.NewCache(store, nil, keystore.CacheOptions{StoreTimeout: 10 * time.Second}, extauthz.PrincipalForKey,
		keystore.NewMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	sessions, realToken, refused := fuzzSessions(f, store)
	logs := &bytes.Buffer{} // the log lines of one input (Decide logs before it returns)
	authz := extauthz.NewAuthorizer(extauthz.Options{Keys: cache, Sessions: sessions,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})

	f.Fuzz(func(t *testing.T, authorization, apiKey, requestID string, write bool) {
		authorization, apiKey = refused.Replace(authorization), refused.Replace(apiKey)
		authorization = strings.ReplaceAll(strings.ReplaceAll(authorization, keyPlaceholder, realKey), tokenPlaceholder, realToken)
		apiKey = strings.ReplaceAll(strings.ReplaceAll(apiKey, keyPlaceholder, realKey), tokenPlaceholder, realToken)
		h := extauthz.MapHeaders{}
		for name, v := range map[string]string{"authorization": authorization, "api-key": apiKey, "x-request-id": requestID} {
			if v != "" {
				h[name] = v
			}
		}
		method := http.MethodGet
		if write {
			method = http.MethodPost
		}
		logs.Reset()
		now := time.Now()
		d := authz.Decide(ctx, &extauthz.Request{Method: method, Path: "/v1/scans", Host: "api.odin.test", Headers: h})

		// The real key, read from the raw headers without ExtractCredential:
		// every header present carries exactly it.
		inAuthz := authorization != "" && bearerCarries(authorization, realKey)
		inAPIKey := apiKey != "" && strings.TrimSpace(apiKey) == realKey
		isReal := (inAuthz || inAPIKey) && (authorization == "" || inAuthz) && (apiKey == "" || inAPIKey)
		// The real token: only in Authorization, and no api-key beside it.
		isToken := apiKey == "" && bearerCarries(authorization, realToken)
		if d.Outcome == extauthz.Allow && !isReal && !isToken {
			t.Fatalf("allowed %q / %q (credential %v %q), which is neither the real key nor the real token", authorization, apiKey, d.Credential.Kind, d.Credential.Value)
		}
		isReal = isReal || isToken
		want := extauthz.DenyUnauthorized
		switch {
		case isReal && !write:
			want = extauthz.Allow
		case isReal && write:
			want = extauthz.DenyForbidden // scans:read does not grant write
		}
		if d.Outcome != want {
			t.Fatalf("%s with %q / %q: %v (%s), want %v", method, authorization, apiKey, d.Outcome, d.Reason, want)
		}
		if strings.Contains(logs.String(), realKey) || strings.Contains(logs.String(), realToken) {
			t.Fatalf("the key or the token was logged: %s", logs.String())
		}
		if v := d.Credential.Value; strings.HasPrefix(v, keystore.KeyPrefix) && !strings.Contains(requestID, v) && strings.Contains(logs.String(), v) {
			t.Fatalf("the credential %q was logged: %s", v, logs.String())
		}
		if d.Outcome == extauthz.Allow {
			if isToken && (d.Principal == nil || d.Principal.Method != "jwt" || d.Principal.Subject != "user_fuzz_jwt") {
				t.Fatalf("allowed as %+v, want the real token's session", d.Principal)
			}
			if !isToken && (d.Principal == nil || d.Principal.KeyID != k.ID) {
				t.Fatalf("allowed as %+v, want key %s", d.Principal, k.ID)
			}
			return
		}
		checkDenialBody(t, &d, requestID, now)
	})
}

// fuzzSessions starts a JWKS (the dev issuer, over loopback HTTP), a
// verifier and a session cache on it, and mints the one real token: user
// user_fuzz_jwt with scans:read, valid for the whole fuzzing run. Unknown
// kids may refetch the key set at most every 30 s, so a fuzzed kid cannot
// turn the JWKS server into the bottleneck. The replacer puts in the signed
// tokens that must be refused (noSIDPlaceholder, noIATPlaceholder).
func fuzzSessions(f *testing.F, store keystore.Store) (*extauthz.Sessions, string, *strings.Replacer) {
	is, err := devissuer.New(devissuer.Options{})
	if err != nil {
		f.Fatal(err)
	}
	srv := httptest.NewServer(is.Handler())
	f.Cleanup(srv.Close)
	logger := slog.New(slog.DiscardHandler)
	v, err := jwtauth.New(context.Background(), jwtauth.Config{JWKSURL: srv.URL + devissuer.JWKSPath, Issuer: is.Issuer()}, logger, nil)
	if err != nil {
		f.Fatal(err)
	}
	revoked := keystore.NewRevokedSessions(store, nil, 0, logger)
	if err := revoked.Sync(context.Background()); err != nil {
		f.Fatal(err)
	}
	sessions, err := extauthz.NewSessions(v, revoked, nil, extauthz.SessionOptions{}, nil)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	claims := devissuer.Claims{Subject: "user_fuzz_jwt", IssuedAt: now, Expiry: now.Add(time.Hour),
		Org: &devissuer.Org{ID: "org_fuzz", Role: "member", Permissions: []string{"scans:read"}}}
	tok, err := is.Mint(claims)
	if err != nil {
		f.Fatal(err)
	}
	noSID, noIAT := claims, claims
	noSID.Extra = map[string]any{"sid": nil}
	noIAT.Extra = map[string]any{"iat": nil, "nbf": nil}
	var pairs []string
	for placeholder, c := range map[string]devissuer.Claims{noSIDPlaceholder: noSID, noIATPlaceholder: noIAT} {
		t, err := is.Mint(c)
		if err != nil {
			f.Fatal(err)
		}
		pairs = append(pairs, placeholder, t)
	}
	return sessions, tok, strings.NewReplacer(pairs...)
}

// checkDenialBody asserts the contract's error body: the body is JSON with exactly the error
// code and a fixed message, an RFC 3339 UTC timestamp and the request id
// (the client's when sane, else a fresh req-<hex>); 401 carries
// www-authenticate.
func checkDenialBody(t *testing.T, d *extauthz.Decision, requestID string, now time.Time) {
	t.Helper()
	body := d.Body(now)
	var b authztest.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil || !json.Valid(body) {
		t.Fatalf("denial body %s is not the contract's error JSON: %v", body, err)
	}
	if b.Error.Code != d.Outcome.Code() || b.Error.Code == "" {
		t.Fatalf("body code %q for outcome %v", b.Error.Code, d.Outcome)
	}
	switch d.Outcome {
	case extauthz.DenyUnauthorized:
		if b.Error.Message != "Invalid or expired authentication token" && b.Error.Message != "Missing authentication token" {
			t.Fatalf("401 message %q is not one of the fixed messages", b.Error.Message)
		}
	case extauthz.DenyForbidden:
		if b.Error.Message == "" || strings.Contains(b.Error.Message, keystore.KeyPrefix) {
			t.Fatalf("403 message %q", b.Error.Message)
		}
	}
	if ts, err := time.Parse(time.RFC3339, b.Timestamp); err != nil || !strings.HasSuffix(b.Timestamp, "Z") || ts.Sub(now).Abs() > 2*time.Second {
		t.Fatalf("timestamp %q is not RFC 3339 UTC now (%v)", b.Timestamp, err)
	}
	sane := requestID != "" && len(requestID) <= 128 && printableToken(requestID)
	if (sane && b.RequestID != requestID) || (!sane && !freshRequestID.MatchString(b.RequestID)) {
		t.Fatalf("requestId %q for x-request-id %q", b.RequestID, requestID)
	}
	headers := map[string]string{}
	for _, p := range d.DenialHeaders() {
		headers[p.Name] = p.Value
	}
	if headers["content-type"] != "application/json" || headers["x-request-id"] != b.RequestID {
		t.Fatalf("denial headers %v", headers)
	}
	if d.Outcome == extauthz.DenyUnauthorized && headers["www-authenticate"] != `Bearer realm="odin"` {
		t.Fatalf("401 without www-authenticate: %v", headers)
	}
}
