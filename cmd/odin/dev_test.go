package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/sqlitestore"
)

// devInstance is an `odin dev` run in this process on ports the kernel
// picked, as its banner describes it.
type devInstance struct {
	banner                      string
	grpc                        string // host:port
	forward, admin, ops, issuer string // base URLs
	token, key                  string
	logs                        *testenv.LogBuffer
	stop                        func() error // ends the run, returns its error
}

var devBannerFields = map[string]*regexp.Regexp{
	"grpc":    regexp.MustCompile(`(?m)^  gRPC Check +(\S+)$`),
	"forward": regexp.MustCompile(`(?m)^  forward-auth +(http://\S+)$`),
	"admin":   regexp.MustCompile(`(?m)^  admin API +(http://\S+)$`),
	"ops":     regexp.MustCompile(`(?m)^  ops +(http://\S+) `),
	"issuer":  regexp.MustCompile(`(?m)^  dev issuer +(http://\S+) `),
	"token":   regexp.MustCompile(`(?m)^  operator token +(\S+)$`),
	"key":     regexp.MustCompile(`(?m)^  demo key +(odin_sk_\w+) `),
}

// parseDevBanner reads the addresses and credentials from a banner.
func parseDevBanner(t *testing.T, banner string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, re := range devBannerFields {
		m := re.FindStringSubmatch(banner)
		if m == nil {
			t.Fatalf("banner has no %s (%s):\n%s", name, re, banner)
		}
		out[name] = m[1]
	}
	return out
}

// startDev runs `odin dev` on dir until the test ends, and returns once its
// banner is out.
func startDev(t *testing.T, dir string) *devInstance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	logs := &testenv.LogBuffer{}
	errc := make(chan error, 1)
	args := []string{"dev", "--data-dir", dir, "--policy-file", "", "--log-level", "debug",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--issuer-addr", "127.0.0.1:0"}
	go func() {
		err := run(ctx, args, pw, logs)
		pw.Close()
		errc <- err
	}()
	bannerc := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "Ctrl-C") {
				break
			}
		}
		bannerc <- b.String()
		_, _ = io.Copy(io.Discard, pr)
	}()
	var banner string
	select {
	case banner = <-bannerc:
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("odin dev printed no banner in 30s; logs:\n%s", logs)
	}
	var done bool
	var runErr error
	stop := func() error {
		if done {
			return runErr
		}
		done = true
		cancel()
		select {
		case runErr = <-errc:
		case <-time.After(30 * time.Second):
			t.Fatalf("odin dev did not stop within 30s of its context ending; logs:\n%s", logs)
		}
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("odin dev: %v", err)
		}
	})
	f := parseDevBanner(t, banner)
	return &devInstance{banner: banner, grpc: f["grpc"], forward: f["forward"], admin: f["admin"], ops: f["ops"], issuer: f["issuer"],
		token: f["token"], key: f["key"], logs: logs, stop: stop}
}

// forwardAuth asks the forward-auth port about method /v1/scans.
func forwardAuth(t *testing.T, base, method string, header ...string) int {
	t.Helper()
	req, _ := http.NewRequest(method, base+"/v1/scans", nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// adminCall sends one admin API request with the operator token.
func adminCall(t *testing.T, d *devInstance, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, d.admin+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+d.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// One process serves the whole system; a revoke through the admin API
// reaches the authz caches before the API answers; cancelling the context
// stops everything and closes the store; a second run reuses it all.
func TestDevServesAndStops(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	d := startDev(t, dir)
	if !keystore.ValidKey(d.key) || len(d.token) < 32 {
		t.Fatalf("banner key %q / token %q", d.key, d.token)
	}
	for _, c := range []struct {
		method string
		header []string
		want   int
	}{
		{"GET", []string{"api-key", d.key}, 200},
		{"GET", nil, 401},
		{"POST", []string{"api-key", d.key}, 403},
	} {
		if got := forwardAuth(t, d.forward, c.method, c.header...); got != c.want {
			t.Errorf("%s with %v: %d, want %d", c.method, c.header, got, c.want)
		}
	}

	status, created := adminCall(t, d, "POST", "/v1/keys", `{"name":"ci","scopes":["scans:read","scans:write"],"user_id":"user_demo"}`)
	key, _ := created["key"].(string)
	id, _ := created["id"].(string)
	if status != 201 || !keystore.ValidKey(key) {
		t.Fatalf("create: %d %v", status, created)
	}
	if got := forwardAuth(t, d.forward, "POST", "api-key", key); got != 200 {
		t.Fatalf("new read-write key on POST: %d, want 200", got)
	}
	if status, _ := adminCall(t, d, "POST", "/v1/keys/"+id+"/revoke", ""); status != 200 {
		t.Fatalf("revoke: %d", status)
	}
	if got := forwardAuth(t, d.forward, "GET", "api-key", key); got != 401 {
		t.Fatalf("revoked key right after the revoke answered: %d, want 401", got)
	}
	if strings.Contains(d.logs.String(), d.key) || strings.Contains(d.logs.String(), key) {
		t.Error("a key appears in the logs")
	}
	if err := d.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !strings.Contains(d.logs.String(), "odin dev stopped") {
		t.Errorf("no clean stop in the logs:\n%s", d.logs)
	}

	again := startDev(t, dir)
	if again.key != d.key || again.token != d.token {
		t.Errorf("second run: key %q token %q, want the first run's", again.key, again.token)
	}
	if got := forwardAuth(t, again.forward, "GET", "api-key", key); got != 401 {
		t.Errorf("revoked key after a restart: %d, want 401", got)
	}
	if got := forwardAuth(t, again.forward, "GET", "api-key", again.key); got != 200 {
		t.Errorf("demo key after a restart: %d, want 200", got)
	}
}

func TestDevCredentials(t *testing.T) {
	dir := t.TempDir()
	open := func(name string) *sqlitestore.Store {
		s, err := sqlitestore.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	ctx, logger := t.Context(), slog.New(slog.DiscardHandler)
	store := open(devDBFile)
	first, err := ensureDevCredentials(ctx, dir, store, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkOperatorToken(first.operatorToken); err != nil {
		t.Errorf("token %q: %v", first.operatorToken, err)
	}
	want := &keystore.Key{UserID: devDemoOwner, Name: devDemoName, Scopes: []string{devDemoScope}, Tier: keystore.DefaultTier, Hint: keystore.KeyHint(first.demoKey)}
	got := *first.demo
	got.ID, got.CreatedAt, got.Hash = "", time.Time{}, keystore.Hash{}
	if diff := cmp.Diff(want, &got); diff != "" {
		t.Errorf("demo key (-want, +got):\n%s", diff)
	}
	for _, name := range []string{devTokenFile, devKeyFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", name, err, fi.Mode().Perm())
		}
	}

	second, err := ensureDevCredentials(ctx, dir, store, logger)
	if err != nil || second.operatorToken != first.operatorToken || second.demoKey != first.demoKey || second.demo.ID != first.demo.ID {
		t.Errorf("second run: %+v, %v; want the first run's credentials", second, err)
	}

	// A deleted database: the demo key file is issued again, same key.
	fresh, err := ensureDevCredentials(ctx, dir, open("other.db"), logger)
	if err != nil || fresh.demoKey != first.demoKey || fresh.demo == nil {
		t.Errorf("on a new database: %+v, %v; want the same demo key re-issued", fresh, err)
	}

	// A revoked demo key stays revoked, and the banner says so.
	if _, err := keystore.RevokeKey(ctx, store, first.demo.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	revoked, err := ensureDevCredentials(ctx, dir, store, logger)
	if err != nil || revoked.demo.RevokedAt.IsZero() {
		t.Fatalf("after a revoke: %+v, %v", revoked.demo, err)
	}
	var b strings.Builder
	newDevBanner(testListeners(t), dir, revoked, "odin").write(&b)
	if !strings.Contains(b.String(), "REVOKED: delete "+filepath.Join(dir, devKeyFile)) {
		t.Errorf("banner does not say the demo key is revoked:\n%s", b.String())
	}
}

func TestLoadOrCreateSecretRefusesGarbage(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{devTokenFile: "short\n", devKeyFile: "odin_sk_nope\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := loadOrCreateSecret(filepath.Join(dir, devTokenFile), newOperatorToken, checkOperatorToken); err == nil || !strings.Contains(err.Error(), "delete the file") {
		t.Errorf("short token: %v", err)
	}
	if _, err := loadOrCreateSecret(filepath.Join(dir, devKeyFile), keystore.GenerateKey, checkDemoKey); err == nil || !strings.Contains(err.Error(), "delete the file") {
		t.Errorf("bad key: %v", err)
	}
	v, err := loadOrCreateSecret(filepath.Join(dir, "new", "secret"), newOperatorToken, checkOperatorToken)
	if err != nil || checkOperatorToken(v) != nil {
		t.Fatalf("create in a new directory: %q %v", v, err)
	}
	if again, _ := loadOrCreateSecret(filepath.Join(dir, "new", "secret"), newOperatorToken, checkOperatorToken); again != v {
		t.Errorf("second load %q, want %q", again, v)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "new", ".tmp-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// testListeners are the five default ports as a banner shows them, without
// listening: the banner only reads their addresses.
func testListeners(t *testing.T) *devListeners {
	t.Helper()
	addr := func(port int) net.Listener { return fakeListener{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}} }
	return &devListeners{grpc: addr(9001), http: addr(9002), ops: addr(9003), admin: addr(9004), issuer: addr(9005)}
}

type fakeListener struct{ addr net.Addr }

func (fakeListener) Accept() (net.Conn, error) { return nil, errors.New("not listening") }
func (fakeListener) Close() error              { return nil }
func (l fakeListener) Addr() net.Addr          { return l.addr }

func TestDevBanner(t *testing.T) {
	const key = "odin_sk_KEY"
	const tok = "TOKEN_TOKEN_TOKEN_TOKEN_TOKEN_TOKEN"
	var b strings.Builder
	newDevBanner(testListeners(t), ".odin", devCredentials{operatorToken: tok, demoKey: key}, "go run ./cmd/odin").write(&b)
	banner := b.String()
	for _, want := range []string{
		"  gRPC Check      127.0.0.1:9001\n",
		"  forward-auth    http://127.0.0.1:9002\n",
		"  admin API       http://127.0.0.1:9004\n",
		"  dev issuer      http://127.0.0.1:9005  (",
		"  data dir        .odin  (",
		"  operator token  " + tok + "\n",
		"  demo key        " + key + "  (scans:read, owner user_demo)\n",
		"plain text",
		"  curl -i -H 'api-key: " + key + "' http://127.0.0.1:9002/v1/scans   # 200",
		"  curl -i http://127.0.0.1:9002/v1/scans   # 401",
		"  curl -i -X POST -H 'api-key: " + key + "' http://127.0.0.1:9002/v1/scans   # 403",
		`  grpcurl -plaintext -d '{"attributes":{"request":{"http":{"headers":{"api-key":"` + key + `"},"method":"GET","path":"/v1/scans"}}}}' 127.0.0.1:9001 envoy.service.auth.v3.Authorization/Check   # allowed`,
		`  grpcurl -plaintext -d '{"attributes":{"request":{"http":{"method":"GET","path":"/v1/scans"}}}}' 127.0.0.1:9001 envoy.service.auth.v3.Authorization/Check   # denied 401`,
		`"method":"POST","path":"/v1/scans"}}}}' 127.0.0.1:9001 envoy.service.auth.v3.Authorization/Check   # denied 403`,
		"  go run ./cmd/odin check --key " + key + " --method POST --path /v1/scans   # denied 403",
		`  JWT=$(curl -s -d '{"sub":"user_demo","permissions":["scans:read","scans:write"]}' http://127.0.0.1:9005/mint | sed -E 's/.*"token":"([^"]+)".*/\1/')`,
		`  curl -i -X POST -H "Authorization: Bearer $JWT" http://127.0.0.1:9002/v1/scans   # 200`,
		`  curl -s -H 'Authorization: Bearer ` + tok + `' -d '{"name":"my key","scopes":["scans:read","scans:write"],"user_id":"user_demo"}' http://127.0.0.1:9004/v1/keys   # 201`,
		"  ODIN_ADMIN_URL=http://127.0.0.1:9004 ODIN_ADMIN_TOKEN=" + tok + " go run ./cmd/odin keys list",
		"\nCtrl-C stops everything",
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	if strings.Contains(banner, "REVOKED") || strings.Contains(banner, "--grpc ") {
		t.Errorf("banner of a usable key on the default port:\n%s", banner)
	}
}

func TestCliName(t *testing.T) {
	for arg0, want := range map[string]string{
		"/tmp/go-build3396143461/b001/exe/odin": "go run ./cmd/odin",
		// the second go run: Go's executable cache in GOCACHE
		"/root/.cache/go-build/83/836cda8ba87c1d1d8a9a0f0569a1e4d29be5ce4718e648f94084d14c0f1eb128-d/odin": "go run ./cmd/odin",
		"/home/me/.cache/go-build/83/deadbeef/odin":                                                        "/home/me/.cache/go-build/83/deadbeef/odin",
		"odin":                   "odin",
		"./odin":                 "./odin",
		"/usr/local/bin/odin":    "/usr/local/bin/odin",
		"/home/me/my tools/odin": `'/home/me/my tools/odin'`,
		"/home/me/it's/odin":     `'/home/me/it'\''s/odin'`,
	} {
		if got := cliName(arg0); got != want {
			t.Errorf("cliName(%q) = %q, want %q", arg0, got, want)
		}
	}
}

func TestHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9001": "127.0.0.1:9001",
		"0.0.0.0:9001":   "127.0.0.1:9001",
		"[::]:9001":      "127.0.0.1:9001",
		"[::1]:9001":     "[::1]:9001",
	} {
		a, err := net.ResolveTCPAddr("tcp", in)
		if err != nil {
			t.Fatal(err)
		}
		if got := hostPort(a); got != want {
			t.Errorf("hostPort(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestDevPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	_, _, err = odin(t, "dev", "--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--ops-addr", "127.0.0.1:0", "--admin-addr", l.Addr().String(), "--issuer-addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "--admin-addr") {
		t.Errorf("admin port in use: %v, want an error naming --admin-addr", err)
	}
	if _, err := os.Stat(filepath.Join(dir, devDBFile)); err == nil {
		t.Error("the store was created although a port was taken")
	}
}

func TestDevHelp(t *testing.T) {
	_, stderr, err := odin(t, "dev", "-h")
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("dev -h: %v", err)
	}
	for _, want := range []string{"[ODIN_DATA_DIR]", "IN PLAIN TEXT", "-grpc-addr", "-admin-addr", "-issuer-addr", "127.0.0.1:9001"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("dev -h lacks %q", want)
		}
	}
}
