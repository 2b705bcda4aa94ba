package webhooks_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/odin-scan/odin-authz/admin/webhooks"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
	"github.com/odin-scan/odin-authz/keystore/sqlitestore"
)

// The test's stores, clock and receiver.

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// store is a key store with its outbox.
type store interface {
	keystore.Store
	keystore.OutboxStore
}

// eachStore runs test on a fresh PostgreSQL database and a fresh SQLite file.
func eachStore(t *testing.T, test func(t *testing.T, s store)) {
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		test(t, testenv.OpenStore(t, testenv.Postgres(t), pgstore.Options{}))
	})
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		s, err := sqlitestore.Open(filepath.Join(t.TempDir(), "odin.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		test(t, s)
	})
}

// clock is a test clock that moves only when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

// newClock starts a minute ahead of the wall clock, so that every event
// the stores stamp with their own clock is already due.
func newClock() *clock { return &clock{now: time.Now().Add(time.Minute)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// received is one verified request.
type received struct {
	id   string
	body map[string]any
}

// receiver is a webhook endpoint that verifies every signature with the
// Standard Webhooks (Svix) library and counts deliveries per webhook-id. Its
// first failFirst requests answer 500.
type receiver struct {
	t   *testing.T
	srv *httptest.Server
	wh  *svix.Webhook

	mu        sync.Mutex
	failFirst int
	requests  int
	got       []received
	perID     map[string]int
	// inFlight counts requests being answered for one id, to catch two at
	// once (block, when set, holds each request until closed).
	inFlight map[string]int
	overlap  int
	block    chan struct{}
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, perID: map[string]int{}, inFlight: map[string]int{}}
	var err error
	if r.wh, err = svix.NewWebhook(testSecret); err != nil {
		t.Fatal(err)
	}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if err := r.wh.Verify(body, req.Header); err != nil {
		r.t.Errorf("signature does not verify: %v", err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	r.requests++
	if r.requests <= r.failFirst {
		r.mu.Unlock()
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	r.inFlight[id]++
	if r.inFlight[id] > 1 {
		r.overlap++
	}
	block := r.block
	r.mu.Unlock()
	if block != nil {
		<-block
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		r.t.Errorf("body is not JSON: %v", err)
	}
	r.mu.Lock()
	r.inFlight[id]--
	r.perID[id]++
	r.got = append(r.got, received{id: id, body: m})
	r.mu.Unlock()
}

func (r *receiver) endpoint(name string, types ...string) webhooks.Endpoint {
	return webhooks.Endpoint{Name: name, URL: r.srv.URL + "/hooks?token=not-logged", Secret: testSecret, Types: types}
}

// bodies returns the bodies received, by event type.
func (r *receiver) bodies() map[string][]map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]map[string]any{}
	for _, g := range r.got {
		typ, _ := g.body["type"].(string)
		out[typ] = append(out[typ], g.body)
	}
	return out
}

func (r *receiver) duplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.perID {
		n += c - 1
	}
	return n
}

func newWorker(t *testing.T, opts webhooks.Options) *webhooks.Worker {
	t.Helper()
	if opts.Jitter == nil {
		opts.Jitter = func(d time.Duration) time.Duration { return d }
	}
	w, err := webhooks.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func manager(s keystore.Store) *keystore.Manager {
	return keystore.NewManager(s, nil, keystore.ManagerOptions{SingleProcess: true, Notify: func(keystore.Invalidation) {}})
}

// drain steps w until nothing is due.
func drain(t *testing.T, w *webhooks.Worker) {
	t.Helper()
	for range 100 {
		n, err := w.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("the outbox never ran dry")
}

func listAll(t *testing.T, s keystore.OutboxStore, f keystore.OutboxFilter) []keystore.OutboxEvent {
	t.Helper()
	var out []keystore.OutboxEvent
	for {
		page, next, err := s.ListOutbox(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		f.Cursor = next
	}
}

// metricValue is the value of the counter name whose label values are
// values, in the order of their label names (as gathered: sorted).
func metricValue(t *testing.T, reg *prometheus.Registry, name string, values ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i, l := range m.GetLabel() {
				if i >= len(values) || l.GetValue() != values[i] {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s%v", name, values)
	return 0
}
