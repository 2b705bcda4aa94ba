package loadtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

// issuer is a devissuer identity provider served over loopback HTTP, the
// JWKS odin verifies session tokens against.
type issuer struct {
	p   *devissuer.Provider
	srv *http.Server
	url string // JWKS URL
}

func startIssuer() (*issuer, error) {
	p, err := devissuer.New(devissuer.Options{})
	if err != nil {
		return nil, fmt.Errorf("start dev issuer: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start dev issuer: %w", err)
	}
	is := &issuer{p: p, srv: &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 5 * time.Second},
		url: "http://" + l.Addr().String() + devissuer.JWKSPath}
	go func() { _ = is.srv.Serve(l) }()
	return is, nil
}

func (is *issuer) close() { _ = is.srv.Close() }

// minter makes session tokens the server under test trusts: the harness's
// own issuer, or a remote deployment's dev issuer.
type minter interface {
	mint(ctx context.Context, prefix string, n, workers int) ([]string, error)
}

// mint signs n RS256 session tokens, each with its own subject and
// session, valid for an hour, on every core. Minting costs about a
// millisecond a token, so tokens are made before any measurement.
func (is *issuer) mint(ctx context.Context, prefix string, n, workers int) ([]string, error) {
	toks := make([]string, n)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	now := time.Now()
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if ctx.Err() != nil {
					errs <- ctx.Err()
					return
				}
				tok, err := is.p.Mint(devissuer.Claims{
					Subject:   "user_" + prefix + strconv.Itoa(i),
					SessionID: "sess_" + prefix + strconv.Itoa(i),
					IssuedAt:  now, Expiry: now.Add(time.Hour),
					Org:   &devissuer.Org{ID: "org_load", Role: "admin", Permissions: []string{"scans:read", "scans:write"}},
					Extra: map[string]any{"tier": loadTier},
				})
				if err != nil {
					errs <- err
					return
				}
				toks[i] = tok
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("mint tokens: %w", err)
	}
	return toks, nil
}
