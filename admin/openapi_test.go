package admin_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/jackc/pgx/v5"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
)

// The admin API's OpenAPI document (admin/openapi.json) is checked against
// the code here: every request the contract test sends to a real service
// (PostgreSQL, Redis, a dev identity provider) and every response it gets
// go through a RoundTripper that validates both with kin-openapi, so the
// document can drift from the handlers in neither direction.

const openAPIFile = "openapi.json"

// contract is the OpenAPI document with its router, and the responses
// (operation and status) that exchanges have matched.
type contract struct {
	doc    *openapi3.T
	router routers.Router
	mu     sync.Mutex
	seen   map[string]bool // "operationId status"
}

func loadContract(t testing.TB, raw []byte) *contract {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(raw)
	if err != nil {
		t.Fatalf("load the OpenAPI document: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("the OpenAPI document is not valid: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi %q: want 3.1", doc.OpenAPI)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &contract{doc: doc, router: router, seen: map[string]bool{}}
}

// exchange is one request and its response, bodies read.
type exchange struct {
	req      *http.Request
	reqBody  []byte
	status   int
	header   http.Header
	respBody []byte
}

// bearerToken is the document's security check: an Authorization header
// with the Bearer scheme and a token. Whether the token is any good is the
// server's to say (401), not the document's.
func bearerToken(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	v := strings.TrimSpace(in.RequestValidationInput.Request.Header.Get("Authorization"))
	scheme, tok, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, in.SecurityScheme.Scheme) || strings.TrimSpace(tok) == "" {
		return errors.New("no bearer token")
	}
	return nil
}

// check validates an exchange against the document and returns what is
// wrong with the request and with the response; a response that matches is
// recorded as seen.
func (c *contract) check(x exchange) (reqErr, respErr error) {
	ctx := context.Background()
	req := x.req.Clone(ctx)
	req.Body, req.GetBody = io.NopCloser(bytes.NewReader(x.reqBody)), nil
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		err = fmt.Errorf("%s %s is not in the document: %w", req.Method, req.URL.Path, err)
		return err, err
	}
	opts := &openapi3filter.Options{
		AuthenticationFunc:                bearerToken,
		IncludeResponseStatus:             true,
		RejectWhenRequestBodyNotSpecified: true,
		SkipSettingDefaults:               true,
		MultiError:                        true,
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	reqErr = openapi3filter.ValidateRequest(ctx, in)
	respErr = openapi3filter.ValidateResponse(ctx, &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: x.status, Header: x.header,
		Body: io.NopCloser(bytes.NewReader(x.respBody)), Options: opts,
	})
	if respErr == nil {
		c.mu.Lock()
		c.seen[route.Operation.OperationID+" "+strconv.Itoa(x.status)] = true
		c.mu.Unlock()
	}
	return reqErr, respErr
}

// expectation is what a test call expects of the document; the zero value
// is "documented, and the document accepts the request".
type expectation struct {
	// requestInvalid: the document refuses the request (the server must
	// refuse it too).
	requestInvalid bool
	// undocumented: the path or method is not in the document; the server
	// must answer the error body.
	undocumented bool
}

type expectKey struct{}

// verify applies the contract to an exchange: the response always matches
// the document; a request the server accepts (status < 400) always matches
// it; and the document refuses exactly the requests the test expects it to.
func (c *contract) verify(exp expectation, x exchange) error {
	reqErr, respErr := c.check(x)
	if exp.undocumented {
		if !errors.Is(reqErr, routers.ErrPathNotFound) && !errors.Is(reqErr, routers.ErrMethodNotAllowed) {
			return errors.New("expected an undocumented endpoint, but the document has it")
		}
		var body any
		if err := json.Unmarshal(x.respBody, &body); err != nil {
			return fmt.Errorf("answer to an undocumented endpoint: %w", err)
		}
		err := c.doc.Components.Schemas["Error"].Value.VisitJSON(body, openapi3.EnableJSONSchema2020())
		if err != nil {
			return fmt.Errorf("answer to an undocumented endpoint is not the error body: %w", err)
		}
		return nil
	}
	switch {
	case respErr != nil:
		return fmt.Errorf("the response does not match the document: %w", respErr)
	case x.status < 400 && reqErr != nil:
		return fmt.Errorf("the server accepted a request the document refuses: %w", reqErr)
	case exp.requestInvalid && reqErr == nil:
		return errors.New("the document accepts a request the server refuses: describe the constraint")
	case !exp.requestInvalid && reqErr != nil:
		return fmt.Errorf("the document refuses the request: %w", reqErr)
	}
	return nil
}

// documented lists every response of the document as "operationId status".
func (c *contract) documented() []string {
	var out []string
	for _, path := range c.doc.Paths.InMatchingOrder() {
		for _, op := range c.doc.Paths.Value(path).Operations() {
			for status := range op.Responses.Map() {
				out = append(out, op.OperationID+" "+status)
			}
		}
	}
	slices.Sort(out)
	return out
}

// contractTransport validates every exchange of a client with verify and
// fails the test on any mismatch.
type contractTransport struct {
	t *testing.T
	c *contract
}

func (ct *contractTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		var err error
		reqBody, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	fwd := req.Clone(req.Context())
	fwd.Body = http.NoBody
	if len(reqBody) > 0 {
		fwd.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	resp, err := http.DefaultTransport.RoundTrip(fwd)
	if err != nil {
		return nil, err
	}
	respBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	exp, _ := req.Context().Value(expectKey{}).(expectation)
	x := exchange{req: req, reqBody: reqBody, status: resp.StatusCode, header: resp.Header, respBody: respBody}
	if err := ct.c.verify(exp, x); err != nil {
		ct.t.Errorf("%s %s → %d %s\n%v", req.Method, req.URL.RequestURI(), resp.StatusCode, respBody, err)
	}
	return resp, nil
}

// call is one request of the contract test.
type call struct {
	method, path, bearer string
	body                 any // a string is sent as is, anything else as JSON
	header               map[string]string
	status               int
	expect               expectation
}

// contractClient sends calls to one service through a contractTransport.
type contractClient struct {
	base string
	http *http.Client
	n    *atomic.Int64
}

func (cc contractClient) do(t *testing.T, c call) admintest.Response {
	t.Helper()
	var rd io.Reader
	switch b := c.body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	ctx := context.WithValue(context.Background(), expectKey{}, c.expect)
	req, err := http.NewRequestWithContext(ctx, c.method, cc.base+c.path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	req.Header.Set("X-Request-Id", fmt.Sprintf("req-contract-%d", cc.n.Add(1)))
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	r := admintest.Send(t, cc.http, req)
	if c.status != 0 && r.Status != c.status {
		t.Errorf("%s %s: status %d, want %d: %s", c.method, c.path, r.Status, c.status, r.Raw)
	}
	return r
}

// svixHeaders signs a Clerk webhook delivery like Svix does; a zero at
// makes a forged signature.
func svixHeaders(t *testing.T, id string, at time.Time, payload string, forge bool) map[string]string {
	t.Helper()
	h := map[string]string{"svix-id": id, "svix-timestamp": strconv.FormatInt(at.Unix(), 10)}
	if forge {
		h["svix-signature"] = "v1," + base64.StdEncoding.EncodeToString([]byte("forged signature 32 bytes long!!"))
		return h
	}
	wh, err := svix.NewWebhook(admintest.WebhookSecret)
	if err != nil {
		t.Fatal(err)
	}
	if h["svix-signature"], err = wh.Sign(id, at, []byte(payload)); err != nil {
		t.Fatal(err)
	}
	return h
}

// unexercised are the documented responses the contract test cannot
// provoke, and why. Anything else documented must be seen.
var unexercised = map[string]string{
	"createKey 500":            "INTERNAL is a recovered panic",
	"listKeys 500":             "INTERNAL is a recovered panic",
	"getKey 500":               "INTERNAL is a recovered panic",
	"revokeKey 500":            "INTERNAL is a recovered panic",
	"rollKey 500":              "INTERNAL is a recovered panic",
	"updateKey 500":            "INTERNAL is a recovered panic",
	"disableKey 500":           "INTERNAL is a recovered panic",
	"enableKey 500":            "INTERNAL is a recovered panic",
	"revokeSession 500":        "INTERNAL is a recovered panic",
	"clerkWebhook 500":         "INTERNAL is a recovered panic",
	"githubSecretScanning 500": "INTERNAL is a recovered panic",
	"listAuditEvents 500":      "INTERNAL is a recovered panic",
	// Throttling failed authentication would throttle the rest of this test,
	// which calls from one address; TestFailedAuthIsThrottled provokes it.
	"createKey 429":       "failed-auth throttling, see TestFailedAuthIsThrottled",
	"listKeys 429":        "failed-auth throttling, see TestFailedAuthIsThrottled",
	"getKey 429":          "failed-auth throttling, see TestFailedAuthIsThrottled",
	"revokeKey 429":       "failed-auth throttling, see TestFailedAuthIsThrottled",
	"rollKey 429":         "failed-auth throttling, see TestFailedAuthIsThrottled",
	"updateKey 429":       "failed-auth throttling, see TestFailedAuthIsThrottled",
	"disableKey 429":      "failed-auth throttling, see TestFailedAuthIsThrottled",
	"enableKey 429":       "failed-auth throttling, see TestFailedAuthIsThrottled",
	"revokeSession 429":   "failed-auth throttling, see TestFailedAuthIsThrottled",
	"listAuditEvents 429": "failed-auth throttling, see TestFailedAuthIsThrottled",
	// Outgoing webhook deliveries, as above.
	"listWebhookDeliveries 500": "INTERNAL is a recovered panic",
	"retryWebhookDelivery 500":  "INTERNAL is a recovered panic",
	"listWebhookDeliveries 429": "failed-auth throttling, see TestFailedAuthIsThrottled",
	"retryWebhookDelivery 429":  "failed-auth throttling, see TestFailedAuthIsThrottled",
}

func TestOpenAPIContract(t *testing.T) {
	e := newEnv(t)
	served := getRaw(t, e.URL+"/openapi.json")
	onDisk, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served, onDisk) {
		t.Fatal("GET /openapi.json does not serve admin/openapi.json")
	}
	ct := loadContract(t, served)
	n := &atomic.Int64{}
	client := func(url string) contractClient {
		return contractClient{base: url, http: &http.Client{Transport: &contractTransport{t: t, c: ct}, Timeout: 10 * time.Second}, n: n}
	}
	c := client(e.URL)

	t.Run("operations", func(t *testing.T) { contractOperations(t, c) })
	t.Run("keys", func(t *testing.T) { contractKeys(t, e, c) })
	t.Run("key changes", func(t *testing.T) { contractKeyChanges(t, e, c) })
	t.Run("key rate limits", func(t *testing.T) { contractKeyRateLimits(t, e, c) })
	t.Run("key networks", func(t *testing.T) { contractKeyNetworks(t, e, c) })
	t.Run("sessions", func(t *testing.T) { contractSessions(t, e, c) })
	t.Run("webhook", func(t *testing.T) { contractWebhook(t, c) })
	t.Run("secret scanning", func(t *testing.T) { contractSecretScanning(t, e, client) })
	t.Run("audit log", func(t *testing.T) { contractAudit(t, c) })
	t.Run("webhook deliveries", func(t *testing.T) { contractWebhookDeliveries(t, client) })
	t.Run("undocumented", func(t *testing.T) {
		for _, p := range []struct{ method, path string }{{"GET", "/v1/nope"}, {"DELETE", "/v1/keys"}, {"PUT", "/v1/keys/key_x"}, {"GET", "/v1/webhooks/clerk"}} {
			c.do(t, call{method: p.method, path: p.path, bearer: admintest.OperatorToken, status: 404, expect: expectation{undocumented: true}})
		}
	})
	t.Run("webhooks not configured", func(t *testing.T) {
		cfg := e.Config
		cfg.WebhookSecret = ""
		c := client(startService(t, cfg))
		body := `{"type":"session.ended","data":{"id":"sess_x"}}`
		c.do(t, call{method: "POST", path: "/v1/webhooks/clerk", body: body, header: svixHeaders(t, "msg_nocfg", time.Now(), body, false), status: 404})
	})
	t.Run("reverification", func(t *testing.T) { contractReverification(t, e, client) })
	t.Run("store outage", func(t *testing.T) { contractOutage(t, client) })
	t.Run("bus outage", func(t *testing.T) { contractBusOutage(t, e, client) })
	if t.Failed() {
		return
	}

	var missing []string
	for _, r := range ct.documented() {
		_, excused := unexercised[r]
		switch {
		case ct.seen[r] && excused:
			t.Errorf("%s was exercised: take it off the unexercised list", r)
		case !ct.seen[r] && !excused:
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		t.Errorf("documented responses the test never saw (exercise them, or remove them from the document):\n  %s", strings.Join(missing, "\n  "))
	}
	for r := range unexercised {
		if !slices.Contains(ct.documented(), r) {
			t.Errorf("unexercised lists %s, which the document does not have", r)
		}
	}
}

func getRaw(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return raw
}

// startService serves another admin service with cfg until the test ends.
func startService(t *testing.T, cfg adminsvc.Config) string {
	t.Helper()
	srv := httptest.NewServer(serviceOn(t, cfg).Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func contractOperations(t *testing.T, c contractClient) {
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json"} {
		c.do(t, call{method: "GET", path: path, status: 200})
	}
}

// callers are the bearer tokens of the keys scenarios.
type callers struct {
	op, alice, bob, orgAdmin, orgMember, narrow string
}

// keyIDs are the keys the create scenario leaves for the others.
type keyIDs struct {
	op, alice, org string
}

const keysPath = "/v1/keys"

var invalid = expectation{requestInvalid: true}

func contractKeys(t *testing.T, e *env, c contractClient) {
	who := callers{
		op:        admintest.OperatorToken,
		alice:     e.Token("user_alice", "", ""),
		bob:       e.Token("user_bob", "", ""),
		orgAdmin:  e.Token("user_carol", "org_acme", "admin"),
		orgMember: e.Token("user_dave", "org_acme", "member"),
		narrow:    e.Token("user_erin", "org_acme", "admin", "scans:read"),
	}
	ids := contractCreateKeys(t, c, who)
	contractListKeys(t, c, who)
	contractKeyActions(t, e, c, who, ids)
}

func contractCreateKeys(t *testing.T, c contractClient, who callers) keyIDs {
	op, alice, orgAdmin := who.op, who.alice, who.orgAdmin
	r := c.do(t, call{method: "POST", path: keysPath, bearer: op, status: 201, body: map[string]any{
		"name": "CI", "scopes": []string{"scans:read", "scans:write"}, "user_id": "user_a", "tier": "pro",
		"expires_at": time.Now().Add(720 * time.Hour).UTC().Format(time.RFC3339)}})
	opKey := r.Str("id")
	r = c.do(t, call{method: "POST", path: keysPath, bearer: alice, status: 201, body: map[string]any{"name": "alice's", "scopes": []string{"scans:read"}}})
	aliceKey := r.Str("id")
	r = c.do(t, call{method: "POST", path: keysPath, bearer: orgAdmin, status: 201, body: map[string]any{"name": "acme CI", "scopes": []string{}, "org_id": "org_acme"}})
	orgKey := r.Str("id")
	c.do(t, call{method: "POST", path: keysPath, bearer: op, status: 201, body: map[string]any{"name": "org only", "scopes": []string{}, "org_id": "org_acme"}})
	contractRefusedKeys(t, c, who)
	return keyIDs{op: opKey, alice: aliceKey, org: orgKey}
}

// contractRefusedKeys are the creations the server refuses.
func contractRefusedKeys(t *testing.T, c contractClient, who callers) {
	op, alice, orgMember, narrow := who.op, who.alice, who.orgMember, who.narrow

	for _, tc := range []call{
		{body: "{", expect: invalid},
		{body: `{"name":"x","scopes":[],"user_id":"u","admin":true}`, expect: invalid},
		{body: `{"name":5,"scopes":[],"user_id":"u"}`, expect: invalid},
		{body: map[string]any{"scopes": []string{}, "user_id": "user_a"}, expect: invalid},
		{body: map[string]any{"name": "x", "user_id": "user_a"}, expect: invalid},
		{body: map[string]any{"name": "x\x01", "scopes": []string{}, "user_id": "user_a"}, expect: invalid},
		{body: map[string]any{"name": strings.Repeat("n", 201), "scopes": []string{}, "user_id": "user_a"}, expect: invalid},
		{body: map[string]any{"name": "x", "scopes": []string{"BAD SCOPE"}, "user_id": "user_a"}, expect: invalid},
		{body: map[string]any{"name": "x", "scopes": []string{}, "user_id": "user_a", "tier": "Pro!"}, expect: invalid},
		{body: map[string]any{"name": "x", "scopes": []string{}, "user_id": "bad id"}, expect: invalid},
		{body: map[string]any{"name": "x", "scopes": []string{}, "user_id": "user_a", "expires_at": "tomorrow"}, expect: invalid},
		{body: `{"name":"` + strings.Repeat("a", 70<<10) + `","scopes":[],"user_id":"u"}`, expect: invalid},
		// Refused by the server on what the document cannot know, or that
		// JSON Schema cannot say (kin-openapi ignores trailing data).
		{body: `{"name":"x","scopes":[],"user_id":"u"} {}`},
		{body: map[string]any{"name": "x", "scopes": []string{"root"}, "user_id": "user_a"}},
		{body: map[string]any{"name": "x", "scopes": []string{}, "user_id": "user_a", "expires_at": "2020-01-01T00:00:00Z"}},
		{body: map[string]any{"name": "x", "scopes": []string{}}},
	} {
		tc.method, tc.path, tc.bearer, tc.status = "POST", keysPath, op, 400
		c.do(t, tc)
	}
	for _, tc := range []call{
		{bearer: orgMember, body: map[string]any{"name": "x", "scopes": []string{}, "org_id": "org_acme"}},
		{bearer: alice, body: map[string]any{"name": "x", "scopes": []string{}, "user_id": "user_bob"}},
		{bearer: narrow, body: map[string]any{"name": "x", "scopes": []string{"scans:write"}, "org_id": "org_acme"}},
		{bearer: alice, body: map[string]any{"name": "x", "scopes": []string{}, "tier": "enterprise"}},
	} {
		tc.method, tc.path, tc.status = "POST", keysPath, 403
		c.do(t, tc)
	}
	for _, tc := range []call{
		{bearer: "", expect: invalid},
		{bearer: op + "x"},
		{bearer: "not-a-jwt.at.all"},
		{header: map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("a:b"))}, expect: invalid},
	} {
		tc.method, tc.path, tc.status = "POST", keysPath, 401
		tc.body = map[string]any{"name": "x", "scopes": []string{}}
		c.do(t, tc)
		tc.method, tc.body = "GET", nil
		c.do(t, tc)
	}
}

func contractListKeys(t *testing.T, c contractClient, who callers) {
	op, alice, orgAdmin, orgMember := who.op, who.alice, who.orgAdmin, who.orgMember
	c.do(t, call{method: "GET", path: keysPath, bearer: op, status: 200})
	c.do(t, call{method: "GET", path: keysPath + "?user_id=user_a&revoked=false&limit=10", bearer: op, status: 200})
	c.do(t, call{method: "GET", path: keysPath + "?org_id=org_acme", bearer: op, status: 200})
	c.do(t, call{method: "GET", path: keysPath, bearer: alice, status: 200})
	c.do(t, call{method: "GET", path: keysPath + "?owner=org&revoked=true", bearer: orgAdmin, status: 200})
	c.do(t, call{method: "GET", path: keysPath + "?owner=org", bearer: orgMember, status: 403})
	page := c.do(t, call{method: "GET", path: keysPath + "?limit=1", bearer: op, status: 200})
	if next := page.Str("next_cursor"); next == "" {
		t.Error("a page of 1 out of 4 keys has no next_cursor")
	} else {
		c.do(t, call{method: "GET", path: keysPath + "?limit=1&cursor=" + url.QueryEscape(next), bearer: op, status: 200})
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=ten", "revoked=maybe", "revoked=1"} {
		c.do(t, call{method: "GET", path: keysPath + "?" + q, bearer: op, status: 400, expect: invalid})
	}
	c.do(t, call{method: "GET", path: keysPath + "?owner=everyone", bearer: alice, status: 400, expect: invalid})
	c.do(t, call{method: "GET", path: keysPath + "?cursor=not-a-cursor!", bearer: op, status: 400})
}

// contractKeyActions reads, rolls and revokes keys.
func contractKeyActions(t *testing.T, e *env, c contractClient, who callers, ids keyIDs) {
	op, alice, bob, orgAdmin := who.op, who.alice, who.bob, who.orgAdmin
	opKey, aliceKey, orgKey := ids.op, ids.alice, ids.org
	hour := time.Now().UTC().Truncate(time.Hour)
	if err := e.Store.RecordUsage(context.Background(), []keystore.Usage{{KeyID: opKey, Hour: hour, Count: 3, LastUsed: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if r := c.do(t, call{method: "GET", path: keysPath + "/" + opKey, bearer: op, status: 200}); r.Body["usage"] == nil || r.Body["last_used_at"] == nil {
		t.Errorf("GET a used key shows no usage: %s", r.Raw)
	}
	c.do(t, call{method: "GET", path: keysPath + "/" + aliceKey, bearer: alice, status: 200})
	c.do(t, call{method: "GET", path: keysPath + "/" + aliceKey, bearer: bob, status: 404})
	c.do(t, call{method: "GET", path: keysPath + "/key_nope", bearer: op, status: 404})

	// Roll, then revoke.
	r := c.do(t, call{method: "POST", path: keysPath + "/" + opKey + "/roll", bearer: op, body: map[string]any{"grace_seconds": 60}, status: 201})
	rolled := r.Str("id")
	// Rolled once: in its grace period the old key names its successor and
	// refuses a second roll.
	if r := c.do(t, call{method: "POST", path: keysPath + "/" + opKey + "/roll", bearer: op, status: 409}); !strings.Contains(r.Raw, rolled) {
		t.Errorf("second roll does not name the successor %s: %s", rolled, r.Raw)
	}
	if r := c.do(t, call{method: "GET", path: keysPath + "/" + opKey, bearer: op, status: 200}); r.Str("replaced_by") != rolled {
		t.Errorf("rolled key's replaced_by: %s", r.Raw)
	}
	c.do(t, call{method: "POST", path: keysPath + "/" + orgKey + "/roll", bearer: orgAdmin, status: 201})
	c.do(t, call{method: "POST", path: keysPath + "/" + aliceKey + "/roll", bearer: alice, body: map[string]any{}, status: 201})
	for _, body := range []any{map[string]any{"grace_seconds": -1}, map[string]any{"grace_seconds": 2592001}, map[string]any{"grace_seconds": "60"}, map[string]any{"grace_seconds": 1.5}, map[string]any{"grace": 60}, "[]"} {
		c.do(t, call{method: "POST", path: keysPath + "/" + rolled + "/roll", bearer: op, body: body, status: 400, expect: invalid})
	}
	c.do(t, call{method: "POST", path: keysPath + "/key_nope/roll", bearer: op, status: 404})
	impersonator, err := e.Issuer.Mint(devissuer.Claims{Subject: "user_alice", SessionID: "sess_impersonated",
		Extra: map[string]any{"act": map[string]any{"sub": "user_admin"}}})
	if err != nil {
		t.Fatal(err)
	}
	c.do(t, call{method: "POST", path: keysPath + "/" + aliceKey + "/roll", bearer: impersonator, status: 403})
	c.do(t, call{method: "POST", path: keysPath + "/" + aliceKey + "/roll", bearer: bob, status: 404})
	c.do(t, call{method: "POST", path: keysPath + "/" + rolled + "/revoke", bearer: op, status: 200})
	c.do(t, call{method: "POST", path: keysPath + "/" + rolled + "/revoke", bearer: op, status: 200})
	c.do(t, call{method: "POST", path: keysPath + "/" + rolled + "/roll", bearer: op, status: 409})
	c.do(t, call{method: "POST", path: keysPath + "/" + orgKey + "/revoke", bearer: alice, status: 404})
	c.do(t, call{method: "POST", path: keysPath + "/key_nope/revoke", bearer: op, status: 404})
	c.do(t, call{method: "POST", path: keysPath + "/" + orgKey + "/revoke", bearer: orgAdmin, status: 200})
	for _, p := range []string{"/" + opKey, "/" + opKey + "/revoke", "/" + opKey + "/roll"} {
		method := "POST"
		if p == "/"+opKey {
			method = "GET"
		}
		c.do(t, call{method: method, path: keysPath + p, status: 401, expect: invalid})
	}
}

// contractReverification: with --admin-reverify, a session without a
// recent second factor gets the 403 of ReverificationError on create, roll
// and enable, and on a change that widens a key's network allowlist; a
// fresh one and the operator are served.
func contractReverification(t *testing.T, e *env, client func(string) contractClient) {
	cfg := e.Config
	rv, err := jwtauth.ParseReverification("strict")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Reverify = &rv
	c := client(startService(t, cfg))
	fresh, stale := fvaToken(t, e, "user_rv", []int{0, 1}), fvaToken(t, e, "user_rv", []int{0, 60})
	body := map[string]any{"name": "rv", "scopes": []string{"scans:read"}, "allowed_cidrs": []string{"203.0.113.0/24"}}
	id := c.do(t, call{method: "POST", path: keysPath, bearer: fresh, body: body, status: 201}).Str("id")
	c.do(t, call{method: "PATCH", path: keysPath + "/" + id, bearer: stale, body: map[string]any{"allowed_cidrs": []string{"203.0.113.0/25"}}, status: 200})
	for _, r := range []admintest.Response{
		c.do(t, call{method: "PATCH", path: keysPath + "/" + id, bearer: stale, body: map[string]any{"allowed_cidrs": nil}, status: 403}),
		c.do(t, call{method: "POST", path: keysPath, bearer: stale, body: body, status: 403}),
		c.do(t, call{method: "POST", path: keysPath + "/" + id + "/roll", bearer: stale, status: 403}),
		c.do(t, call{method: "POST", path: keysPath + "/" + id + "/enable", bearer: stale, status: 403}),
	} {
		if r.Body["clerk_error"] == nil {
			t.Errorf("no reverification hint: %s", r.Raw)
		}
	}
	c.do(t, call{method: "POST", path: keysPath + "/" + id + "/roll", bearer: admintest.OperatorToken, status: 201})
}

func contractSessions(t *testing.T, e *env, c contractClient) {
	frank := e.Token("user_frank", "", "")
	c.do(t, call{method: "POST", path: "/v1/sessions/bad%20id/revoke", bearer: admintest.OperatorToken, status: 400, expect: expectation{requestInvalid: true}})
	c.do(t, call{method: "POST", path: "/v1/sessions/" + strings.Repeat("s", 129) + "/revoke", bearer: admintest.OperatorToken, status: 400, expect: expectation{requestInvalid: true}})
	c.do(t, call{method: "POST", path: "/v1/sessions/sess_other/revoke", bearer: frank, status: 404})
	c.do(t, call{method: "POST", path: "/v1/sessions/sess_any/revoke", bearer: admintest.OperatorToken, status: 200})
	c.do(t, call{method: "POST", path: "/v1/sessions/sess_any/revoke", status: 401, expect: expectation{requestInvalid: true}})
	c.do(t, call{method: "POST", path: "/v1/sessions/sess_user_frank/revoke", bearer: frank, status: 200})
	deadline := time.Now().Add(2 * time.Second)
	for c.do(t, call{method: "POST", path: "/v1/sessions/sess_user_frank/revoke", bearer: frank}).Status != 401 {
		if time.Now().After(deadline) {
			t.Fatal("a logged-out session can still call the API")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func contractWebhook(t *testing.T, c contractClient) {
	path := "/v1/webhooks/clerk"
	hook := func(id string, at time.Time, payload string, forge bool, status int, exp expectation) admintest.Response {
		return c.do(t, call{method: "POST", path: path, body: payload, header: svixHeaders(t, id, at, payload, forge), status: status, expect: exp})
	}
	ended := `{"type":"session.ended","data":{"id":"sess_w1","user_id":"user_w"}}`
	hook("msg_forged", time.Now(), ended, true, 401, expectation{})
	hook("msg_stale", time.Now().Add(-10*time.Minute), ended, false, 401, expectation{})
	c.do(t, call{method: "POST", path: path, body: ended, status: 401, expect: expectation{requestInvalid: true}})
	hook("msg_1", time.Now(), ended, false, 200, expectation{})
	if r := hook("msg_1", time.Now(), ended, false, 200, expectation{}); r.Str("status") != "duplicate" {
		t.Errorf("replay: %s", r.Raw)
	}
	if r := hook("msg_2", time.Now(), `{"type":"user.deleted","data":{"id":"user_alice","deleted":true}}`, false, 200, expectation{}); r.Str("revoked_keys") == "" {
		t.Errorf("user.deleted: %s", r.Raw)
	}
	hook("msg_3", time.Now(), `{"type":"email.created","data":{"id":"x"}}`, false, 200, expectation{})
	hook("msg_4", time.Now(), `{"type":"session.revoked","data":{"id":"bad id"}}`, false, 400, expectation{})
	hook("msg_5", time.Now(), `not json`, false, 400, expectation{requestInvalid: true})
	hook("msg_6", time.Now(), `{"data":{"id":"sess_x"}}`, false, 400, expectation{requestInvalid: true})
}

func contractAudit(t *testing.T, c contractClient) {
	path := "/v1/audit-log"
	since := url.QueryEscape(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))
	c.do(t, call{method: "GET", path: path, bearer: admintest.OperatorToken, status: 200})
	r := c.do(t, call{method: "GET", path: path + "?owner=user_a&action=key.created&actor=operator&since=" + since + "&limit=1", bearer: admintest.OperatorToken, status: 200})
	if events, _ := r.Body["events"].([]any); len(events) != 1 {
		t.Errorf("filtered audit log: %s", r.Raw)
	}
	c.do(t, call{method: "GET", path: path + "?target=sess_w1&until=" + url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)), bearer: admintest.OperatorToken, status: 200})
	r = c.do(t, call{method: "GET", path: path + "?limit=1", bearer: admintest.OperatorToken, status: 200})
	if next := r.Str("next_cursor"); next != "" {
		c.do(t, call{method: "GET", path: path + "?limit=1&cursor=" + url.QueryEscape(next), bearer: admintest.OperatorToken, status: 200})
	}
	for _, q := range []string{"since=yesterday", "until=2025-13-01T00:00:00Z", "limit=0", "limit=1001"} {
		c.do(t, call{method: "GET", path: path + "?" + q, bearer: admintest.OperatorToken, status: 400, expect: expectation{requestInvalid: true}})
	}
	c.do(t, call{method: "GET", path: path + "?cursor=bogus", bearer: admintest.OperatorToken, status: 400})
	c.do(t, call{method: "GET", path: path, status: 401, expect: expectation{requestInvalid: true}})
}

// contractOutage cuts a service off its database: every endpoint that
// needs it answers 503, and /readyz says not ready.
func contractOutage(t *testing.T, client func(string) contractClient) {
	e := newEnv(t)
	c := client(e.URL)
	r := c.do(t, call{method: "POST", path: "/v1/keys", bearer: admintest.OperatorToken, status: 201, body: map[string]any{"name": "x", "scopes": []string{}, "user_id": "user_o"}})
	id := r.Str("id")
	cutDatabase(t, e.Config.DatabaseURL)

	deadline := time.Now().Add(10 * time.Second)
	for c.do(t, call{method: "GET", path: "/readyz"}).Status != 503 {
		if time.Now().After(deadline) {
			t.Fatal("/readyz still ready without PostgreSQL")
		}
		time.Sleep(100 * time.Millisecond)
	}
	body := `{"type":"session.ended","data":{"id":"sess_o"}}`
	for _, tc := range []call{
		{method: "POST", path: "/v1/keys", body: map[string]any{"name": "x", "scopes": []string{}, "user_id": "user_o"}},
		{method: "GET", path: "/v1/keys"},
		{method: "GET", path: "/v1/keys/" + id},
		{method: "POST", path: "/v1/keys/" + id + "/revoke"},
		{method: "POST", path: "/v1/keys/" + id + "/roll"},
		{method: "PATCH", path: "/v1/keys/" + id, body: map[string]any{"name": "y"}},
		{method: "POST", path: "/v1/keys/" + id + "/disable"},
		{method: "POST", path: "/v1/keys/" + id + "/enable"},
		{method: "POST", path: "/v1/sessions/sess_o/revoke"},
		{method: "GET", path: "/v1/audit-log"},
		{method: "GET", path: "/v1/webhooks/deliveries"},
		{method: "POST", path: "/v1/webhooks/deliveries/1/retry"},
		{method: "POST", path: "/v1/webhooks/clerk", body: body, header: svixHeaders(t, "msg_o", time.Now(), body, false)},
	} {
		if tc.header == nil {
			tc.bearer = admintest.OperatorToken
		}
		tc.status = 503
		if r := c.do(t, tc); r.ErrorCode() != "UNAVAILABLE" {
			t.Errorf("%s %s during an outage: %s", tc.method, tc.path, r.Raw)
		}
	}
}

// contractBusOutage cuts a service off Redis: every change that narrows
// what a credential may do is committed but unconfirmed (503 with the
// NotPropagated body), and a webhook delivery answered so is applied again
// when Svix retries it, not taken for a replay.
func contractBusOutage(t *testing.T, e *env, client func(string) contractClient) {
	u, err := url.Parse(e.Config.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewProxy(t, u.Host)
	proxy.SetDown(true)
	u.Host = proxy.Addr()
	cfg := e.Config
	cfg.RedisURL = u.String()
	c := client(startService(t, cfg))
	newKey := func(owner string) string {
		r := c.do(t, call{method: "POST", path: "/v1/keys", bearer: admintest.OperatorToken, status: 201, body: map[string]any{"name": "x", "scopes": []string{}, "user_id": owner}})
		return r.Str("id")
	}
	unconfirmed := func(r admintest.Response) {
		t.Helper()
		if r.ErrorCode() != "UNAVAILABLE" || r.Body["committed"] != true || r.Str("denied_by") == "" || r.Header.Get("Retry-After") == "" {
			t.Errorf("not an unconfirmed change: %d %s", r.Status, r.Raw)
		}
	}
	id := newKey("user_bus")
	unconfirmed(c.do(t, call{method: "POST", path: "/v1/keys/" + id + "/revoke", bearer: admintest.OperatorToken, status: 503}))
	unconfirmed(c.do(t, call{method: "POST", path: "/v1/keys/" + id + "/revoke", bearer: admintest.OperatorToken, status: 503})) // a retry propagates again
	r := c.do(t, call{method: "POST", path: "/v1/keys/" + newKey("user_bus") + "/roll", bearer: admintest.OperatorToken, status: 503})
	if res, _ := r.Body["result"].(map[string]any); res["key"] == nil || res["previous"] == nil {
		t.Errorf("unconfirmed roll without the new key: %s", r.Raw)
	}
	unconfirmed(r)
	id = newKey("user_bus")
	for range 2 { // the same change again propagates again
		unconfirmed(c.do(t, call{method: "PATCH", path: "/v1/keys/" + id, bearer: admintest.OperatorToken, body: map[string]any{"scopes": []string{}}, status: 503}))
	}
	unconfirmed(c.do(t, call{method: "POST", path: "/v1/keys/" + id + "/disable", bearer: admintest.OperatorToken, status: 503}))
	unconfirmed(c.do(t, call{method: "POST", path: "/v1/keys/" + id + "/enable", bearer: admintest.OperatorToken, status: 503}))
	unconfirmed(c.do(t, call{method: "POST", path: "/v1/sessions/sess_bus/revoke", bearer: admintest.OperatorToken, status: 503}))
	for _, body := range []string{`{"type":"session.ended","data":{"id":"sess_busw"}}`, `{"type":"user.deleted","data":{"id":"user_bus"}}`} {
		h := svixHeaders(t, "msg_bus"+testenv.RandomSuffix(), time.Now(), body, false)
		for range 2 { // Svix's retry is applied again, not answered "duplicate"
			unconfirmed(c.do(t, call{method: "POST", path: "/v1/webhooks/clerk", body: body, header: h, status: 503}))
		}
	}
}

// cutDatabase makes a test database refuse connections and ends the open
// ones, as if PostgreSQL went away.
func cutDatabase(t *testing.T, dbURL string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.PostgresAdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name); err != nil {
		t.Fatal(err)
	}
}

// The validation is not vacuous: responses and requests that drift from
// the document in the ways a code change would are caught.
func TestOpenAPICatchesDrift(t *testing.T) {
	raw, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	c := loadContract(t, raw)
	const (
		ts   = `"timestamp":"2025-01-15T10:30:00Z","requestId":"req-1"`
		key  = `"id":"key_0123456789abcdefABCD","name":"CI","hint":"odin_sk_AbCd…wxyz","scopes":[],"tier":"free","created_at":"2025-01-15T10:30:00Z","revoked":false,"expired":false,"disabled":false`
		plan = `"key":"odin_sk_0123456789012345678901234567890123456789012345678"`
	)
	ok := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req-1"}}
	unauth := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req-1"}, "Www-Authenticate": {`Bearer realm="odin"`}}
	tests := []struct {
		name        string
		method      string
		path        string
		reqBody     string
		status      int
		header      http.Header
		body        string
		wantReqErr  bool
		wantRespErr bool
	}{
		{"a good key", "GET", "/v1/keys/key_1", "", 200, ok, `{` + key + `}`, false, false},
		{"a good created key", "POST", "/v1/keys", `{"name":"CI","scopes":[],"user_id":"u"}`, 201, ok, `{` + plan + `,` + key + `}`, false, false},
		{"a key with a network allowlist", "POST", "/v1/keys", `{"name":"CI","scopes":[],"user_id":"u","allowed_cidrs":["203.0.113.0/24","2001:db8::1"]}`, 201, ok, `{` + plan + `,` + key + `,"allowed_cidrs":["203.0.113.0/24","2001:db8::1/128"]}`, false, false},
		{"an allowlist that is not a list", "GET", "/v1/keys/key_1", "", 200, ok, `{` + key + `,"allowed_cidrs":"203.0.113.0/24"}`, false, true},
		{"an empty allowlist shown", "GET", "/v1/keys/key_1", "", 200, ok, `{` + key + `,"allowed_cidrs":[]}`, false, true},
		{"an allowlist entry that is no address", "POST", "/v1/keys", `{"name":"CI","scopes":[],"allowed_cidrs":["localhost"]}`, 400, ok, `{"error":{"code":"INVALID_REQUEST","message":"m","field":"allowed_cidrs[0]"},` + ts + `}`, true, false},
		{"a null allowlist in a change", "PATCH", "/v1/keys/key_1", `{"allowed_cidrs":null}`, 200, ok, `{` + key + `}`, false, false},
		{"a good error", "GET", "/v1/keys", "", 401, unauth, `{"error":{"code":"UNAUTHORIZED","message":"m"},` + ts + `}`, false, false},
		{"an undocumented field", "GET", "/v1/keys/key_1", "", 200, ok, `{` + key + `,"hash":"00"}`, false, true},
		{"the plaintext in a read", "GET", "/v1/keys/key_1", "", 200, ok, `{` + plan + `,` + key + `}`, false, true},
		{"a missing field", "GET", "/v1/keys", "", 200, ok, `{}`, false, true},
		{"a wrong type", "GET", "/v1/keys/key_1", "", 200, ok, `{` + strings.Replace(key, `"revoked":false`, `"revoked":"no"`, 1) + `}`, false, true},
		{"a roll without the previous key", "POST", "/v1/keys/key_1/roll", "", 201, ok, `{` + plan + `,` + key + `}`, false, true},
		{"an undocumented status", "GET", "/v1/keys", "", 418, ok, `{"error":{"code":"INTERNAL","message":"m"},` + ts + `}`, false, true},
		{"a status the operation cannot answer", "GET", "/v1/audit-log", "", 404, ok, `{"error":{"code":"NOT_FOUND","message":"m"},` + ts + `}`, false, true},
		{"an error code that is not its status's", "GET", "/v1/keys", "", 401, unauth, `{"error":{"code":"FORBIDDEN","message":"m"},` + ts + `}`, false, true},
		{"an error body without requestId", "GET", "/v1/keys", "", 400, ok, `{"error":{"code":"INVALID_REQUEST","message":"m"},"timestamp":"2025-01-15T10:30:00Z"}`, false, true},
		{"a timestamp that is not RFC 3339", "GET", "/v1/keys", "", 400, ok, `{"error":{"code":"INVALID_REQUEST","message":"m"},"timestamp":"yesterday","requestId":"r"}`, false, true},
		{"a 401 without www-authenticate", "GET", "/v1/keys", "", 401, ok, `{"error":{"code":"UNAUTHORIZED","message":"m"},` + ts + `}`, false, true},
		{"a response without X-Request-Id", "GET", "/v1/keys", "", 200, http.Header{"Content-Type": {"application/json"}}, `{"keys":[]}`, false, true},
		{"another content type", "GET", "/v1/keys", "", 200, http.Header{"Content-Type": {"text/html"}, "X-Request-Id": {"r"}}, `{"keys":[]}`, false, true},
		{"a request with an unknown field", "POST", "/v1/keys", `{"name":"CI","scopes":[],"admin":true}`, 400, ok, `{"error":{"code":"INVALID_REQUEST","message":"m"},` + ts + `}`, true, false},
		{"a body where none is documented", "POST", "/v1/keys/key_1/revoke", `{}`, 200, ok, `{` + key + `}`, true, false},
		{"an undocumented path", "GET", "/v1/nope", "", 404, ok, `{"error":{"code":"NOT_FOUND","message":"m"},` + ts + `}`, true, true},
		{"an undocumented method", "PATCH", "/v1/keys", "", 404, ok, `{"error":{"code":"NOT_FOUND","message":"m"},` + ts + `}`, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.reqBody))
			req.Header.Set("Authorization", "Bearer "+admintest.OperatorToken)
			if tt.reqBody != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			reqErr, respErr := c.check(exchange{req: req, reqBody: []byte(tt.reqBody), status: tt.status, header: tt.header, respBody: []byte(tt.body)})
			if (reqErr != nil) != tt.wantReqErr || (respErr != nil) != tt.wantRespErr {
				t.Errorf("request error %v (want one: %v); response error %v (want one: %v)", reqErr, tt.wantReqErr, respErr, tt.wantRespErr)
			}
		})
	}
}

// routePattern is a net/http ServeMux pattern with a method.
var routePattern = regexp.MustCompile(`^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (/\S*)$`)

// Every route the code registers is in the document: the admin package's
// patterns and the operations endpoints adminsvc mounts beside them.
func TestOpenAPIListsEveryRoute(t *testing.T) {
	raw, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	c := loadContract(t, raw)
	files, _ := filepath.Glob("*.go")
	files = append(files, "../internal/service/adminsvc/adminsvc.go")
	var patterns []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil && routePattern.MatchString(s) {
					patterns = append(patterns, s)
				}
			}
			return true
		})
	}
	if len(patterns) < 12 {
		t.Fatalf("found only %d route patterns in the code: %v", len(patterns), patterns)
	}
	for _, p := range patterns {
		m := routePattern.FindStringSubmatch(p)
		item := c.doc.Paths.Value(m[2])
		if item == nil || item.GetOperation(m[1]) == nil {
			t.Errorf("the code routes %q, which admin/openapi.json does not document", p)
		}
	}
}
