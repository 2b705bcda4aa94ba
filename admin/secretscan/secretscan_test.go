package secretscan_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/admin/secretscan"
)

// signer is a signing key as GitHub holds one: an identifier and a P-256
// private key.
type signer struct {
	id  string
	key *ecdsa.PrivateKey
}

func newSigner(t *testing.T, id string) signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{id: id, key: k}
}

// headers signs body as GitHub does: base64 of the ASN.1 DER ECDSA
// signature of its SHA-256.
func (s signer) headers(t *testing.T, body []byte) http.Header {
	t.Helper()
	digest := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set(secretscan.HeaderKeyID, s.id)
	h.Set(secretscan.HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	return h
}

// keyServer serves a key document in GitHub's format with the signers it
// is given, counting fetches; down makes it answer 503.
type keyServer struct {
	*httptest.Server
	mu      sync.Mutex
	signers []signer
	fetches atomic.Int64
	down    atomic.Bool
}

func newKeyServer(t *testing.T, signers ...signer) *keyServer {
	t.Helper()
	ks := &keyServer{signers: signers}
	ks.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ks.fetches.Add(1)
		if ks.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		ks.mu.Lock()
		defer ks.mu.Unlock()
		type entry struct {
			KeyIdentifier string `json:"key_identifier"`
			Key           string `json:"key"`
			IsCurrent     bool   `json:"is_current"`
		}
		var doc struct {
			PublicKeys []entry `json:"public_keys"`
		}
		for i, s := range ks.signers {
			der, err := x509.MarshalPKIXPublicKey(&s.key.PublicKey)
			if err != nil {
				t.Error(err)
			}
			doc.PublicKeys = append(doc.PublicKeys, entry{KeyIdentifier: s.id, Key: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), IsCurrent: i == len(ks.signers)-1})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(ks.Close)
	return ks
}

func (ks *keyServer) publish(signers ...signer) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.signers = signers
}

// clock is a settable time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newVerifier(t *testing.T, url string, clk *clock) (*secretscan.Verifier, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	v, err := secretscan.New(secretscan.Options{KeysURL: url, MinRefreshInterval: time.Minute, Now: clk.Now, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return v, reg
}

var body = []byte(`[{"token":"odin_sk_x","type":"odin_api_key","url":"https://github.com/o/r/blob/x/f","source":"content"}]`)

func TestVerify(t *testing.T) {
	ctx := context.Background()
	current := newSigner(t, "key-1")
	ks := newKeyServer(t, current)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	v, reg := newVerifier(t, ks.URL, clk)

	if err := v.Verify(ctx, current.headers(t, body), body); err != nil {
		t.Fatalf("a genuine report: %v", err)
	}
	if err := v.Verify(ctx, current.headers(t, body), body); err != nil || ks.fetches.Load() != 1 {
		t.Fatalf("second report: %v, %d fetches, want 1 (cached)", err, ks.fetches.Load())
	}
	tampered := append([]byte(nil), body...)
	tampered[len(tampered)-3] = 'X'
	cases := map[string]struct {
		h    http.Header
		body []byte
		want error
	}{
		"tampered body":       {current.headers(t, body), tampered, secretscan.ErrBadSignature},
		"other key's sig":     {signer{id: "key-1", key: newSigner(t, "x").key}.headers(t, body), body, secretscan.ErrBadSignature},
		"no headers":          {http.Header{}, body, secretscan.ErrMissingSignature},
		"no signature":        {http.Header{secretscan.HeaderKeyID: {"key-1"}}, body, secretscan.ErrMissingSignature},
		"no key id":           {http.Header{secretscan.HeaderSignature: {"MEUCIQ=="}}, body, secretscan.ErrMissingSignature},
		"signature not b64":   {http.Header{secretscan.HeaderKeyID: {"key-1"}, secretscan.HeaderSignature: {"not base64!"}}, body, secretscan.ErrMalformedSignature},
		"signature not DER":   {http.Header{secretscan.HeaderKeyID: {"key-1"}, secretscan.HeaderSignature: {base64.StdEncoding.EncodeToString([]byte("junk"))}}, body, secretscan.ErrBadSignature},
		"key id far too long": {http.Header{secretscan.HeaderKeyID: {string(make([]byte, 300))}, secretscan.HeaderSignature: {"MEUCIQ=="}}, body, secretscan.ErrMalformedSignature},
	}
	for name, tc := range cases {
		if err := v.Verify(ctx, tc.h, tc.body); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	if n := ks.fetches.Load(); n != 1 {
		t.Errorf("refused reports with a known key fetched the document: %d fetches", n)
	}
	if got := counter(t, reg, "odin_admin_secret_scanning_signature_failures_total", "reason", "bad_signature"); got != 3 {
		t.Errorf("bad_signature failures: %v, want 3", got)
	}
}

// An unknown key identifier fetches the document again, at most once per
// interval however many arrive (concurrently too); a rotated key is picked
// up; a withdrawn key stops verifying once the document is older than
// KeysMaxAge.
func TestUnknownKeyRefreshIsRateLimited(t *testing.T) {
	ctx := context.Background()
	old := newSigner(t, "key-old")
	ks := newKeyServer(t, old)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	v, reg := newVerifier(t, ks.URL, clk)
	if err := v.Verify(ctx, old.headers(t, body), body); err != nil {
		t.Fatal(err)
	}

	if err := v.Verify(ctx, newSigner(t, "key-early").headers(t, body), body); !errors.Is(err, secretscan.ErrUnknownKey) || ks.fetches.Load() != 1 {
		t.Fatalf("unknown key right after a fetch: %v, %d fetches, want ErrUnknownKey and no new fetch", err, ks.fetches.Load())
	}
	clk.Advance(time.Minute)
	forged := newSigner(t, "key-forged")
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := v.Verify(ctx, forged.headers(t, body), body); !errors.Is(err, secretscan.ErrUnknownKey) {
				t.Errorf("unknown key: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := ks.fetches.Load(); n != 2 {
		t.Fatalf("20 reports signed by an unknown key: %d fetches in all, want 2 (the first, one refresh)", n)
	}
	if got := counter(t, reg, "odin_admin_secret_scanning_key_fetches_total", "result", "rate_limited"); got < 1 {
		t.Errorf("rate_limited fetches not counted: %v", got)
	}

	// GitHub rotates: the new key signs before the interval has passed, so
	// it is refused until the next fetch is allowed, then accepted.
	rotated := newSigner(t, "key-new")
	ks.publish(old, rotated)
	if err := v.Verify(ctx, rotated.headers(t, body), body); !errors.Is(err, secretscan.ErrUnknownKey) {
		t.Fatalf("within the interval: %v, want ErrUnknownKey", err)
	}
	clk.Advance(time.Minute)
	if err := v.Verify(ctx, rotated.headers(t, body), body); err != nil {
		t.Fatalf("rotated key after the interval: %v", err)
	}
	if n := ks.fetches.Load(); n != 3 {
		t.Fatalf("%d fetches, want 3", n)
	}

	// The old key is withdrawn: trusted until the document is stale.
	ks.publish(rotated)
	if err := v.Verify(ctx, old.headers(t, body), body); err != nil {
		t.Fatalf("old key while the document is fresh: %v", err)
	}
	clk.Advance(secretscan.KeysMaxAge)
	if err := v.Verify(ctx, old.headers(t, body), body); !errors.Is(err, secretscan.ErrUnknownKey) {
		t.Fatalf("withdrawn key after KeysMaxAge: %v, want ErrUnknownKey", err)
	}
}

// Without the document, a report signed by a key never seen is
// unavailable (neither accepted nor refused as forged); a key fetched
// before keeps verifying while GitHub's API is down.
func TestKeyDocumentUnavailable(t *testing.T) {
	ctx := context.Background()
	s := newSigner(t, "key-1")
	ks := newKeyServer(t, s)
	ks.down.Store(true)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	v, _ := newVerifier(t, ks.URL, clk)
	if err := v.Verify(ctx, s.headers(t, body), body); !errors.Is(err, secretscan.ErrKeysUnavailable) {
		t.Fatalf("document down: %v, want ErrKeysUnavailable", err)
	}
	if err := v.Verify(ctx, s.headers(t, body), body); !errors.Is(err, secretscan.ErrKeysUnavailable) || ks.fetches.Load() != 1 {
		t.Fatalf("again within the interval: %v, %d fetches, want ErrKeysUnavailable and no new fetch", err, ks.fetches.Load())
	}
	ks.down.Store(false)
	clk.Advance(time.Minute)
	if err := v.Verify(ctx, s.headers(t, body), body); err != nil {
		t.Fatalf("document back: %v", err)
	}
	ks.down.Store(true)
	clk.Advance(secretscan.KeysMaxAge + time.Minute)
	if err := v.Verify(ctx, s.headers(t, body), body); err != nil {
		t.Fatalf("stale known key while the document is down: %v", err)
	}
}

func TestParseKeys(t *testing.T) {
	s := newSigner(t, "k")
	der, _ := x509.MarshalPKIXPublicKey(&s.key.PublicKey)
	good := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	wrongCurve := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der384}))
	doc := func(entries ...[2]string) []byte {
		var d struct {
			PublicKeys []map[string]any `json:"public_keys"`
		}
		for _, e := range entries {
			d.PublicKeys = append(d.PublicKeys, map[string]any{"key_identifier": e[0], "key": e[1], "is_current": true})
		}
		raw, _ := json.Marshal(d)
		return raw
	}
	keys, err := secretscan.ParseKeys(doc([2]string{"good", good}, [2]string{"p384", wrongCurve}, [2]string{"junk", "not pem"}, [2]string{"", good}))
	if err != nil || len(keys) != 1 || keys["good"] == nil {
		t.Fatalf("ParseKeys: %v %v, want only the P-256 key", keys, err)
	}
	for name, raw := range map[string][]byte{"empty": doc(), "not json": []byte("<html>"), "only junk": doc([2]string{"j", "x"})} {
		if _, err := secretscan.ParseKeys(raw); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// counter is the value of a counter series with the label value.
func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("%s{%s=%q} not exported", name, label, value)
	return 0
}
