// Package deploy_test checks the deployment files beside it: the Prometheus
// alert rules (with promtool, against their unit tests), the Grafana
// dashboard's queries, and that every metric either uses is exported by a
// running odin authz or odin admin.
package deploy_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"

	"github.com/odin-scan/odin-authz/admin"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/internal/tlsreload"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const (
	alertsFile     = "prometheus/alerts.yaml"
	alertTestsFile = "prometheus/alerts_test.yaml"
	dashboardFile  = "grafana/odin.json"
)

// promtool returns the path of promtool (Debian's prometheus package).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Unavailable(t, "promtool is not installed (apt-get install prometheus)")
	}
	return p
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// The rules are valid and pass their unit tests.
func TestAlertRules(t *testing.T) {
	runPromtool(t, "check", "rules", alertsFile)
	runPromtool(t, "test", "rules", alertTestsFile)
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(raw, &rf); err != nil {
		t.Fatal(err)
	}
	return rf
}

// Every alert has a severity, a summary, a description and a runbook whose
// anchor is a heading of the operations guide, and every alert has a unit
// test.
func TestAlertsAreDocumentedAndTested(t *testing.T) {
	headings := map[string]bool{}
	for _, doc := range []string{"../docs/OPERATIONS.md"} {
		raw, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "#") {
				headings[anchor(strings.TrimLeft(line, "# "))] = true
			}
		}
	}
	tests, err := os.ReadFile(alertTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a rule that is not an alert", g.Name)
				continue
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			ref, ok := strings.CutPrefix(r.Annotations["runbook_url"], "docs/OPERATIONS.md#")
			if !ok || !headings[ref] {
				t.Errorf("%s: runbook_url %q is not docs/OPERATIONS.md#<one of its headings>", r.Alert, r.Annotations["runbook_url"])
			}
			if !bytes.Contains(tests, []byte("alertname: "+r.Alert+"\n")) {
				t.Errorf("%s: no unit test in %s", r.Alert, alertTestsFile)
			}
		}
	}
}

// anchor is the id GitHub gives a Markdown heading.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func dashboardQueries(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	if len(exprs) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	return exprs
}

// Every dashboard query is valid PromQL: promtool checks them as recording
// rules, with Grafana's $__rate_interval replaced by a range.
func TestDashboardQueriesParse(t *testing.T) {
	bin := promtool(t)
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range dashboardQueries(t) {
		q, _ := json.Marshal(strings.ReplaceAll(e, "$__rate_interval", "5m"))
		fmt.Fprintf(&rules, "      - record: dashboard:query_%d\n        expr: %s\n", i, q)
	}
	f := filepath.Join(t.TempDir(), "dashboard_rules.yaml")
	if err := os.WriteFile(f, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "check", "rules", f).CombinedOutput(); err != nil {
		t.Fatalf("the dashboard's queries are not valid PromQL: %v\n%s", err, out)
	}
}

var metricName = regexp.MustCompile(`\bodin_[a-z0-9_]+\b`)

// usedMetrics is every odin_ metric the alert rules and the dashboard name.
func usedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			for _, m := range metricName.FindAllString(r.Expr, -1) {
				used[m] = append(used[m], "alert "+r.Alert)
			}
		}
	}
	for _, e := range dashboardQueries(t) {
		for _, m := range metricName.FindAllString(e, -1) {
			used[m] = append(used[m], "dashboard")
		}
	}
	return used
}

// exposed adds the series names a gathered family is scraped as.
func exposed(names map[string]string, mfs []*dto.MetricFamily, who string) {
	for _, mf := range mfs {
		n := mf.GetName()
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[n+s] = who
			}
		case dto.MetricType_SUMMARY:
			names[n], names[n+"_sum"], names[n+"_count"] = who, who, who
		default:
			names[n] = who
		}
	}
}

// Every metric the alerts and the dashboard use is exported by odin authz
// or odin admin, run in-process as the commands run them (PostgreSQL with a
// read replica URL, Redis, a JWKS, TLS, rate limits) and exercised a little:
// a few checks, a key created and revoked.
func TestMetricsAreExposed(t *testing.T) {
	db := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	is := authztest.NewIssuer(t)
	jwt := is.Trust()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	const operator = "operator-token-for-the-metrics-test-0123456789"
	admin, err := adminsvc.New(ctx, adminsvc.Config{
		DatabaseURL: db, RedisURL: redisURL, RedisPrefix: prefix, RedisMACSecret: testenv.RedisMACSecret,
		JWT: jwt, OperatorToken: operator, Scopes: []string{"scans:read", "scans:write"},
		// Served, so its metrics are registered; nothing here reports a leak.
		GitHubSecretScanning: admin.GitHubSecretScanning{Enabled: true, KeysURL: "http://127.0.0.1:1/unused"},
	}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	adminSrv := httptest.NewServer(admin.Handler())
	t.Cleanup(adminSrv.Close)

	certFile, keyFile := selfSigned(t)
	authz, err := authzsvc.New(ctx, authzsvc.Config{
		DatabaseURL: db, DatabaseReadURL: db,
		RedisURL: redisURL, RedisPrefix: prefix, RedisMACSecret: testenv.RedisMACSecret,
		JWT: jwt, JWTDefaultScopes: []string{"scans:read"},
		TLS: &tlsreload.Config{CertFile: certFile, KeyFile: keyFile, ClientCAFile: certFile},
	}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	listen := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	done := make(chan error, 1)
	go func() { done <- authz.Serve(ctx, authzsvc.Listeners{GRPC: listen(), HTTP: listen(), Ops: listen()}) }()
	t.Cleanup(func() { cancel(); <-done })

	adminDo := func(method, path string, body string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, adminSrv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+operator)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, out)
		}
		return out
	}
	check := func(headers map[string]string) int {
		req := httptest.NewRequest("GET", "/v1/scans", nil) // as Envoy's http_service sends it
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		authz.ForwardAuth().ServeHTTP(rec, req)
		return rec.Code
	}
	created := adminDo("POST", "/v1/keys", `{"name":"metrics","scopes":["scans:read"],"user_id":"user_m"}`)
	key, _ := created["key"].(string)
	tok, err := is.Mint(devissuer.Claims{Subject: "user_m", SessionID: "sess_metrics"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the replica joins the bus
	for range 3 {
		if got := check(map[string]string{"api-key": key}); got != 200 {
			t.Fatalf("check with a valid key: %d", got)
		}
		check(map[string]string{"Authorization": "Bearer " + tok})
		check(map[string]string{"api-key": "odin_sk_" + strings.Repeat("x", 40)})
		check(nil)
	}
	adminDo("POST", "/v1/keys/"+created["id"].(string)+"/revoke", "")
	if got := check(map[string]string{"api-key": key}); got != 401 {
		t.Fatalf("check with the revoked key: %d", got)
	}

	names := map[string]string{}
	for _, s := range []struct {
		who string
		g   interface {
			Gather() ([]*dto.MetricFamily, error)
		}
	}{{"odin authz", authz.Registry()}, {"odin admin", admin.Registry()}} {
		mfs, err := s.g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		exposed(names, mfs, s.who)
	}
	used := usedMetrics(t)
	var missing []string
	for m, where := range used {
		if names[m] == "" {
			slices.Sort(where)
			missing = append(missing, fmt.Sprintf("%s (used by %s)", m, strings.Join(slices.Compact(where), ", ")))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("%d metrics used but not exported by odin authz or odin admin:\n  %s", len(missing), strings.Join(missing, "\n  "))
	}
	t.Logf("%d metrics used, all exported", len(used))
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "odin-metrics-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
