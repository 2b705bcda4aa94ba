package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/sqlitestore"
)

const devSummary = `DEVELOPMENT ONLY: the whole system in one process, with nothing installed
but Go. It serves odin authz (gRPC Check, HTTP forward-auth, ops), odin admin
and the dev issuer (odin devissuer) on loopback ports, keeps its keys in an
embedded SQLite file under --data-dir, and passes revocations between them in
process (no Redis): a revoke through the admin API or 'odin keys' with
ODIN_ADMIN_URL takes effect at once.

The first run creates an operator token and a demo key (scopes scans:read,
owner user_demo) and stores both IN PLAIN TEXT under --data-dir, so that
later runs reuse them and the banner can show them. Only a dev tool may do
that: odin itself stores a key's hash only. Delete the data directory to
start over. Ctrl-C stops everything.`

// Names under the data directory.
const (
	devDBFile    = "odin.db"
	devTokenFile = "operator-token"
	devKeyFile   = "demo-key"
)

// The demo key odin dev creates on its first run: read-only, so that the
// banner can show a 403 with it.
const (
	devDemoOwner = "user_demo"
	devDemoName  = "odin dev demo key"
	devDemoScope = "scans:read"
)

// devConfig is the configuration of `odin dev`.
type devConfig struct {
	dataDir    string
	policyFile string
	// trustedProxies are the proxies before the forward-auth port, as
	// odin authz's --trusted-proxies, and parsed.
	trustedProxies []string
	trusted        []netip.Prefix
	addrs          devAddrs
	hooks          outgoingWebhookFlags // to try the outgoing webhooks against a local receiver
}

// devGRPCAddr is odin dev's gRPC address by default, and so where odin
// check sends its Check by default.
const devGRPCAddr = "127.0.0.1:9001"

// devAddrs are the listen addresses of odin dev's five ports.
type devAddrs struct {
	grpc, http, ops, admin, issuer string
}

// devListeners are odin dev's ports, all opened before anything else starts.
type devListeners struct {
	grpc, http, ops, admin, issuer net.Listener
}

func (l *devListeners) close() {
	for _, x := range []net.Listener{l.grpc, l.http, l.ops, l.admin, l.issuer} {
		if x != nil {
			_ = x.Close()
		}
	}
}

// devFlagSet defines odin dev's flags, writing to cfg and lo.
func devFlagSet(cfg *devConfig, lo *logOptions) *flags {
	f := newFlags("dev", devSummary)
	f.String(&cfg.dataDir, "data-dir", "ODIN_DATA_DIR", ".odin", "directory of the embedded store, the operator token and the demo key (created 0700, files 0600)")
	f.String(&cfg.addrs.grpc, "grpc-addr", "ODIN_DEV_GRPC_ADDR", devGRPCAddr, "gRPC Check listen address")
	f.String(&cfg.addrs.http, "http-addr", "ODIN_DEV_HTTP_ADDR", "127.0.0.1:9002", "HTTP forward-auth listen address")
	f.String(&cfg.addrs.ops, "ops-addr", "ODIN_DEV_OPS_ADDR", "127.0.0.1:9003", "ops listen address (/healthz, /readyz, /metrics)")
	f.String(&cfg.addrs.admin, "admin-addr", "ODIN_DEV_ADMIN_ADDR", "127.0.0.1:9004", "admin API listen address")
	f.String(&cfg.addrs.issuer, "issuer-addr", "ODIN_DEV_ISSUER_ADDR", "127.0.0.1:9005", "dev issuer listen address (JWKS and POST /mint); its URL is the tokens' iss")
	f.String(&cfg.policyFile, "policy-file", "ODIN_POLICY_FILE", "", "route policy (YAML); empty: read for GET/HEAD/OPTIONS, write otherwise")
	f.List(&cfg.trustedProxies, "trusted-proxies", "ODIN_TRUSTED_PROXIES", trustedProxiesUsage)
	lo.bind(f, "text")
	cfg.hooks.bind(f)
	return f
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cfg devConfig
		lo  logOptions
	)
	f := devFlagSet(&cfg, &lo)
	f.SetOutput(stderr)
	if err := f.parseNoArgs(args); err != nil {
		return err
	}
	logger, err := lo.logger(stderr)
	if err != nil {
		return err
	}
	if cfg.trusted, err = parseTrustedProxies(cfg.trustedProxies); err != nil {
		return err
	}
	lis, err := listenDev(cfg.addrs)
	if err != nil {
		return err
	}
	store, err := sqlitestore.Open(filepath.Join(cfg.dataDir, devDBFile))
	if err != nil {
		lis.close()
		return err
	}
	creds, err := ensureDevCredentials(ctx, cfg.dataDir, store, logger)
	if err == nil {
		err = serveDev(ctx, cfg, lis, store, creds, stdout, logger)
	}
	lis.close() // those a failed start left unserved
	if cerr := store.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("dev: close store: %w", cerr))
	}
	if err == nil {
		logger.Info("odin dev stopped")
	}
	return err
}

// listenDev opens every port, or none.
func listenDev(a devAddrs) (*devListeners, error) {
	l := &devListeners{}
	for _, p := range []struct {
		name, flag, addr string
		dst              *net.Listener
	}{
		{"gRPC", "--grpc-addr", a.grpc, &l.grpc},
		{"forward-auth", "--http-addr", a.http, &l.http},
		{"ops", "--ops-addr", a.ops, &l.ops},
		{"admin", "--admin-addr", a.admin, &l.admin},
		{"dev issuer", "--issuer-addr", a.issuer, &l.issuer},
	} {
		x, err := net.Listen("tcp", p.addr)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("dev: listen %s on %s: %w (is another odin running? pick another port with %s)", p.name, p.addr, err, p.flag)
		}
		*p.dst = x
	}
	return l, nil
}

// serveDev runs the dev issuer, odin authz and odin admin on store until
// ctx ends, prints the banner once all three answer, and returns when all
// three have drained. The caller closes the store.
func serveDev(ctx context.Context, cfg devConfig, lis *devListeners, store keystore.Store, creds devCredentials, stdout io.Writer, logger *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	start := func(name string, serve func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serve(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("dev: %s: %w", name, err))
				mu.Unlock()
				cancel() // one service down takes the others with it
			}
		}()
	}
	failed := func(err error) error {
		cancel()
		wg.Wait()
		return errors.Join(append(errs, err)...)
	}

	b := newDevBanner(lis, cfg.dataDir, creds, cliName(os.Args[0]))
	provider, err := devissuer.New(devissuer.Options{Issuer: b.issuerURL})
	if err != nil {
		return failed(err)
	}
	issuerCfg := devIssuerConfig{issuer: b.issuerURL, defaultTTL: 5 * time.Minute, maxTTL: time.Hour}
	start("dev issuer", func() error {
		return serveDevIssuer(ctx, lis.issuer, newDevIssuerHandler(provider, issuerCfg, logger), logger)
	})

	authz, admin, err := newDevServices(ctx, cfg, store, creds.operatorToken, b.issuerURL, b.opsURL+"/metrics", logger)
	if err != nil {
		return failed(err)
	}
	start("authz", func() error {
		return authz.Serve(ctx, authzsvc.Listeners{GRPC: lis.grpc, HTTP: lis.http, Ops: lis.ops})
	})
	start("admin", func() error { return admin.Serve(ctx, lis.admin) })
	if link, ok := admin.ConsoleSignInLink(devConsoleLinkTTL); ok {
		b.consoleLink = b.adminURL + link
	}

	if err := waitDevReady(ctx, b.opsURL+"/readyz", b.adminURL+"/readyz", b.issuerURL+"/healthz"); err != nil {
		if ctx.Err() == nil { // not interrupted: something is wrong
			return failed(err)
		}
	} else {
		b.write(stdout)
	}
	<-ctx.Done()
	wg.Wait()
	return errors.Join(errs...)
}

// newDevServices builds odin authz and odin admin on store, both trusting
// the dev issuer's tokens, with the admin's changes reaching authz's caches
// in process; the console's status page reads authz's decision counters
// from authzMetrics.
func newDevServices(ctx context.Context, cfg devConfig, store keystore.Store, operatorToken, issuerURL, authzMetrics string, logger *slog.Logger) (*authzsvc.Service, *adminsvc.Service, error) {
	hooks, err := cfg.hooks.options()
	if err != nil {
		return nil, nil, err
	}
	jwt := jwtauth.Config{
		JWKSURL: issuerURL + devissuer.JWKSPath,
		Issuer:  issuerURL,
		// As odin devissuer mints them: scopes in "permissions".
		Claims: jwtauth.ClaimsMapping{PermissionsClaim: "permissions"},
	}
	authz, err := authzsvc.New(ctx, authzsvc.Config{
		Store: store, StoreName: "sqlite",
		JWT: jwt, JWTDefaultScopes: extauthz.DefaultSessionScopes(),
		SessionRetention: keystore.DefaultSessionRetention,
		PolicyFile:       cfg.policyFile,
		StripCredential:  true,
		TrustedProxies:   cfg.trusted,
		DrainTimeout:     5 * time.Second,
	}, logger)
	if err != nil {
		return nil, nil, err
	}
	admin, err := adminsvc.New(ctx, adminsvc.Config{
		Store: store, StoreName: "sqlite", Webhooks: hooks,
		// The in-process bus: a change made through the admin API reaches
		// authz's caches before the API answers.
		Notify:        func(inv keystore.Invalidation) { authz.Invalidate(ctx, inv) },
		CacheTTL:      keystore.DefaultCacheTTL,
		JWT:           jwt,
		OperatorToken: operatorToken,
		Scopes:        []string{"scans:read", "scans:write"},
		// The ops port serves authz's /metrics.
		ConsoleAuthzMetricsURL: authzMetrics,
	}, logger)
	if err != nil {
		return nil, nil, err
	}
	return authz, admin, nil
}

// waitDevReady polls each URL until it answers 200, so that the banner is
// printed only once every example in it works.
func waitDevReady(ctx context.Context, urls ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for _, u := range urls {
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("dev: %s did not become ready: %v", u, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// devCredentials are the operator token and the demo key: made on the first
// run, kept under the data directory, reused after.
type devCredentials struct {
	operatorToken string
	// demoKey is the demo key's plaintext. Kept on disk only because this
	// is a dev tool; odin itself never stores a key, only its hash.
	demoKey string
	demo    *keystore.Key
}

// ensureDevCredentials loads the operator token and the demo key from dir,
// creating whichever is missing. A demo key file whose key is not in the
// store (the database was deleted) is issued again, under the same key.
func ensureDevCredentials(ctx context.Context, dir string, store keystore.Store, logger *slog.Logger) (devCredentials, error) {
	var c devCredentials
	var err error
	if c.operatorToken, err = loadOrCreateSecret(filepath.Join(dir, devTokenFile), newOperatorToken, checkOperatorToken); err != nil {
		return c, err
	}
	if c.demoKey, err = loadOrCreateSecret(filepath.Join(dir, devKeyFile), keystore.GenerateKey, checkDemoKey); err != nil {
		return c, err
	}
	c.demo, err = store.KeyByHash(ctx, keystore.HashKey(c.demoKey))
	if errors.Is(err, keystore.ErrNotFound) {
		m := keystore.NewManager(store, nil, keystore.ManagerOptions{Logger: logger})
		c.demo, err = m.Issue(ctx, keystore.Actor{ID: "odin-dev"}, keystore.NewKey{
			UserID: devDemoOwner, Name: devDemoName, Scopes: []string{devDemoScope},
		}, c.demoKey)
		if err == nil {
			logger.Info("created the demo key", "key_id", c.demo.ID, "hint", c.demo.Hint)
		}
	}
	if err != nil {
		return c, fmt.Errorf("dev: demo key: %w", err)
	}
	return c, nil
}

// loadOrCreateSecret returns the secret stored at path, or makes one with
// generate and stores it there (mode 0600) when the file does not exist.
func loadOrCreateSecret(path string, generate func() (string, error), check func(string) error) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		v := strings.TrimSpace(string(b))
		if err := check(v); err != nil {
			return "", fmt.Errorf("dev: %s: %w (delete the file to make a new one)", path, err)
		}
		return v, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("dev: %w", err)
	}
	v, err := generate()
	if err != nil {
		return "", fmt.Errorf("dev: %s: %w", path, err)
	}
	if err := writeSecretFile(path, v); err != nil {
		return "", err
	}
	return v, nil
}

// writeSecretFile writes v to path, readable by its owner only, through a
// temporary file, so a crash never leaves half a secret behind.
func writeSecretFile(path, v string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*") // mode 0600
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	_, err = tmp.WriteString(v + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("dev: write %s: %w", path, err)
	}
	return nil
}

// newOperatorToken returns 192 random bits in hex: 48 characters, over the
// admin API's minimum of 32, and safe anywhere a shell or a flag parser
// reads it (base64 may start with "-").
func newOperatorToken() (string, error) {
	var b [24]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	return hex.EncodeToString(b[:]), nil
}

func checkOperatorToken(v string) error {
	if len(v) < 32 || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return errors.New("not an operator token: want at least 32 printable characters")
	}
	return nil
}

func checkDemoKey(v string) error {
	if !keystore.ValidKey(v) {
		return errors.New("not an odin_sk_ key")
	}
	return nil
}

// cliName is how the banner spells the odin command: `go run ./cmd/odin`
// when this process was started by go run, else the name it was started as.
// go run builds into a temporary go-build directory, or (Go 1.24 and later,
// from the second run on) runs the binary from the executable cache inside
// GOCACHE, at <2 hex>/<64 hex>-d/<name>: neither is a path to hand a user.
func cliName(arg0 string) string {
	slash := filepath.ToSlash(arg0)
	if strings.Contains(slash, "/go-build") && strings.Contains(slash, "/exe/") || goRunCachePath.MatchString(slash) {
		return "go run ./cmd/odin"
	}
	return shellQuote(arg0)
}

// goRunCachePath matches a binary in the go command's executable cache.
var goRunCachePath = regexp.MustCompile(`/[0-9a-f]{2}/[0-9a-f]{64}-d/[^/]+$`)

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@,+%", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// hostPort is a listener's address as a client dials it: an unspecified
// host (":9001", "0.0.0.0") becomes the loopback address.
func hostPort(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// devBanner is what odin dev prints once it is ready.
type devBanner struct {
	grpcAddr                             string
	httpURL, opsURL, adminURL, issuerURL string
	dataDir, token, key, cli             string
	keyRevoked, keyExpired               bool
	// consoleLink is a one-time link that opens the console signed in as
	// the operator (it holds no token); empty when the console is off.
	consoleLink string
}

// devConsoleLinkTTL is how long the banner's console link can be used.
const devConsoleLinkTTL = 15 * time.Minute

func newDevBanner(lis *devListeners, dataDir string, c devCredentials, cli string) devBanner {
	b := devBanner{
		grpcAddr:  hostPort(lis.grpc.Addr()),
		httpURL:   "http://" + hostPort(lis.http.Addr()),
		opsURL:    "http://" + hostPort(lis.ops.Addr()),
		adminURL:  "http://" + hostPort(lis.admin.Addr()),
		issuerURL: "http://" + hostPort(lis.issuer.Addr()),
		dataDir:   dataDir, token: c.operatorToken, key: c.demoKey, cli: cli,
	}
	if c.demo != nil {
		b.keyRevoked = !c.demo.RevokedAt.IsZero()
		b.keyExpired = !c.demo.ExpiresAt.IsZero() && time.Now().After(c.demo.ExpiresAt)
	}
	return b
}

// checkJSON is a CheckRequest as grpcurl takes it.
func checkJSON(method, path string, headers map[string]string) string {
	httpReq := map[string]any{"method": method, "path": path}
	if len(headers) > 0 {
		httpReq["headers"] = headers
	}
	b, _ := json.Marshal(map[string]any{"attributes": map[string]any{"request": map[string]any{"http": httpReq}}})
	return string(b)
}

// write prints the banner: where everything is, and lines to paste. Every
// example ends with a comment saying what it answers.
func (b devBanner) write(w io.Writer) {
	key, tok := b.key, b.token
	apiKey := map[string]string{"api-key": key}
	grpcurl := func(method string, h map[string]string) string {
		return "grpcurl -plaintext -d '" + checkJSON(method, "/v1/scans", h) + "' " + b.grpcAddr + " envoy.service.auth.v3.Authorization/Check"
	}
	check := b.cli + " check"
	if b.grpcAddr != "127.0.0.1:9001" {
		check += " --grpc " + b.grpcAddr
	}
	state := ""
	switch {
	case b.keyRevoked:
		state = "  REVOKED: delete " + filepath.Join(b.dataDir, devKeyFile) + " and restart for a new one"
	case b.keyExpired:
		state = "  EXPIRED: delete " + filepath.Join(b.dataDir, devKeyFile) + " and restart for a new one"
	}
	lines := []string{
		"",
		"odin dev is ready. DEVELOPMENT ONLY: one process, keys in " + filepath.Join(b.dataDir, devDBFile) + ", no Redis.",
		"",
		"  gRPC Check      " + b.grpcAddr,
		"  forward-auth    " + b.httpURL,
		"  admin API       " + b.adminURL,
		"  ops             " + b.opsURL + "  (/healthz /readyz /metrics)",
		"  dev issuer      " + b.issuerURL + "  (JWKS, POST /mint: signs any token it is asked for)",
		"  data dir        " + b.dataDir + "  (delete it to start over)",
		"  operator token  " + tok,
		"  demo key        " + key + "  (" + devDemoScope + ", owner " + devDemoOwner + ")" + state,
		"  The token and the demo key are kept in plain text under the data dir because this is",
		"  a dev tool; odin itself stores only a key's hash.",
		"",
		"Forward-auth (what NGINX, Caddy, Traefik and Envoy's http_service ask):",
		"  curl -i -H 'api-key: " + key + "' " + b.httpURL + "/v1/scans   # 200 allowed: x-odin-* identity headers",
		"  curl -i " + b.httpURL + "/v1/scans   # 401 no credential",
		"  curl -i -X POST -H 'api-key: " + key + "' " + b.httpURL + "/v1/scans   # 403 the demo key is read-only",
		"",
		"gRPC Check, as Envoy calls it (grpcurl: go install github.com/fullstorydev/grpcurl/cmd/grpcurl@latest):",
		"  " + grpcurl("GET", apiKey) + "   # allowed: okResponse",
		"  " + grpcurl("GET", nil) + "   # denied 401",
		"  " + grpcurl("POST", apiKey) + "   # denied 403",
		"  " + check + " --key " + key + " --method POST --path /v1/scans   # denied 403, readable (exit status 1)",
		"",
		"A session token from the dev issuer:",
		"  JWT=$(curl -s -d '{\"sub\":\"user_demo\",\"permissions\":[\"scans:read\",\"scans:write\"]}' " + b.issuerURL +
			"/mint | sed -E 's/.*\"token\":\"([^\"]+)\".*/\\1/')",
		"  curl -i -X POST -H \"Authorization: Bearer $JWT\" " + b.httpURL + "/v1/scans   # 200 allowed",
		"",
		"Keys (the admin API; revoking one denies it at once):",
		"  curl -s -H 'Authorization: Bearer " + tok + "' -d '{\"name\":\"my key\",\"scopes\":[\"scans:read\",\"scans:write\"],\"user_id\":\"" + devDemoOwner + "\"}' " + b.adminURL + "/v1/keys   # 201 the new key, shown once",
		"  ODIN_ADMIN_URL=" + b.adminURL + " ODIN_ADMIN_TOKEN=" + tok + " " + b.cli + " keys list   # then: ... keys revoke key_...",
		"",
		"Ctrl-C stops everything; the next run reuses the data dir, the token and the demo key.",
	}
	if b.consoleLink != "" { // under the admin API's line
		at := slices.Index(lines, "  admin API       "+b.adminURL) + 1
		lines = slices.Insert(lines, at, "  console         "+b.consoleLink+"  (opens signed in as the operator: one use, within 15 minutes; after that "+b.adminURL+"/console/ and the operator token)")
	}
	_, _ = io.WriteString(w, strings.Join(lines, "\n")+"\n")
}
