package drills

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/status"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
)

// The load generator. The project's load library (internal/loadtest/, on ghz) is not
// used here: ghz discards Check response bodies and reports transport errors
// and latencies only, so it cannot tell an allow from a 401 or a 503, nor
// say when each answer was sent relative to the fault. A drill needs both
// for every request, so this is a small closed-loop worker pool of grpc-go
// clients: each worker sends its next Check as soon as its previous answer
// came, over one shared HTTP/2 connection per replica, as Envoy does.

// checkReq is one request a drill asks the load to send.
type checkReq struct {
	class  string // what the drill expects of it, e.g. "cached"
	header string // credential header: "api-key" or "authorization"
	value  string
	target int // index of the replica to ask
}

// sample is one answered (or failed) Check.
type sample struct {
	class  string
	target int
	// phase is the phase the request was sent in, endPhase the one its
	// answer came in.
	phase, endPhase string
	sent            time.Time
	latency         time.Duration
	// outcome is "200", the denial's HTTP status ("401", "503", ...),
	// "bad_body_<status>" for a denial without a correct error body, or
	// "transport_<gRPC code>" for a failed RPC.
	outcome string
	// detail is a failed RPC's status message (e.g. a refused connection).
	detail string
}

// phases names the stage of a drill; every request is labelled with the
// phase it was sent in.
type phases struct {
	cur atomic.Pointer[string]
	mu  sync.Mutex
	at  []phaseMark
}

type phaseMark struct {
	name  string
	start time.Time
}

func newPhases(first string) *phases {
	p := &phases{}
	p.set(first)
	return p
}

func (p *phases) set(name string) {
	p.cur.Store(&name)
	p.mu.Lock()
	p.at = append(p.at, phaseMark{name, time.Now()})
	p.mu.Unlock()
}

func (p *phases) current() string { return *p.cur.Load() }

// durations returns how long each phase lasted, until end.
func (p *phases) durations(end time.Time) map[string]time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := map[string]time.Duration{}
	for i, m := range p.at {
		stop := end
		if i+1 < len(p.at) {
			stop = p.at[i+1].start
		}
		d[m.name] += stop.Sub(m.start)
	}
	return d
}

// load is a bounded run: it ends at maxDuration, after maxRequests, or when
// stopped, whichever comes first.
type load struct {
	targets     []authv3.AuthorizationClient
	workers     int
	maxDuration time.Duration
	maxRequests int64
	// timeout is each Check's deadline, far above any answer the design
	// allows, so that a slow answer is measured rather than lost.
	timeout time.Duration
	next    func(i int64) checkReq
	phases  *phases
}

// running is a load in progress.
type running struct {
	start   time.Time
	stopped chan struct{}
	stop    func()
	done    chan struct{}
	samples []sample
	elapsed time.Duration
	sent    atomic.Int64
}

func (l load) start() *running {
	r := &running{start: time.Now(), stopped: make(chan struct{}), done: make(chan struct{})}
	var once sync.Once
	r.stop = func() { once.Do(func() { close(r.stopped) }) }
	deadline := r.start.Add(l.maxDuration)
	per := make([][]sample, l.workers)
	var wg sync.WaitGroup
	for w := range l.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-r.stopped:
					return
				default:
				}
				i := r.sent.Add(1) - 1
				if i >= l.maxRequests || time.Now().After(deadline) {
					return
				}
				per[w] = append(per[w], l.send(i))
			}
		}()
	}
	go func() {
		wg.Wait()
		r.elapsed = time.Since(r.start)
		for _, s := range per {
			r.samples = append(r.samples, s...)
		}
		close(r.done)
	}()
	return r
}

// wait lets the load run to its end (duration or request count) and
// returns every sample.
func (r *running) wait() []sample {
	<-r.done
	return r.samples
}

// finish stops the load and returns every sample.
func (r *running) finish() []sample {
	r.stop()
	<-r.done
	return r.samples
}

func (l load) send(i int64) sample {
	req := l.next(i)
	s := sample{class: req.class, target: req.target, phase: l.phases.current(), sent: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	rid := "req-drill-" + strconv.FormatInt(i, 10)
	resp, err := l.targets[req.target].Check(ctx, envoyRequest(req.header, req.value, rid))
	cancel()
	s.latency = time.Since(s.sent)
	s.endPhase = l.phases.current()
	s.outcome = outcomeOf(resp, err, rid)
	if err != nil {
		s.detail = status.Convert(err).Message()
	}
	return s
}

// envoyRequest builds a CheckRequest the way Envoy's ext_authz filter sends
// one: lower-case headers with the pseudo-headers, :path with its query, an
// x-request-id, the client's address.
func envoyRequest(header, value, requestID string) *authv3.CheckRequest {
	h := map[string]string{
		":authority": "api.odin.test", ":method": "GET", ":path": "/v1/scans?page=2", ":scheme": "https",
		"user-agent": "odin-drill", "x-forwarded-proto": "https", "x-request-id": requestID,
	}
	if header != "" {
		h[header] = value
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: requestID, Method: "GET", Path: "/v1/scans?page=2", Host: "api.odin.test",
			Scheme: "https", Protocol: "HTTP/1.1", Headers: h,
		}},
	}}
}

// specCodes is the contract's error code for each denial status.
var specCodes = map[int]string{401: "UNAUTHORIZED", 403: "FORBIDDEN", 429: "RATE_LIMITED", 503: "UNAVAILABLE"}

// outcomeOf reads a Check answer as the client would see it, and checks
// that a denial carries the error body for its status, echoing our request id.
func outcomeOf(resp *authv3.CheckResponse, err error, requestID string) string {
	if err != nil {
		return "transport_" + status.Code(err).String()
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		if resp.GetOkResponse() != nil && resp.GetStatus().GetCode() == 0 {
			return "200"
		}
		return "malformed_response"
	}
	code := int(d.GetStatus().GetCode())
	var body authztest.ErrorBody
	if json.Unmarshal([]byte(d.GetBody()), &body) != nil || body.Error.Code != specCodes[code] ||
		body.Error.Message == "" || body.RequestID != requestID {
		return fmt.Sprintf("bad_body_%d", code)
	}
	if _, err := time.Parse(time.RFC3339, body.Timestamp); err != nil {
		return fmt.Sprintf("bad_body_%d", code)
	}
	return strconv.Itoa(code)
}

// counts tallies the outcomes of the samples that match keep.
func counts(samples []sample, keep func(sample) bool) map[string]int {
	c := map[string]int{}
	for _, s := range samples {
		if keep == nil || keep(s) {
			c[s.outcome]++
		}
	}
	return c
}

func ofClass(class string) func(sample) bool {
	return func(s sample) bool { return s.class == class }
}

func inPhase(phase string) func(sample) bool {
	return func(s sample) bool { return s.phase == phase }
}

// within keeps the requests sent and answered in the same phase.
func within(phase string) func(sample) bool {
	return func(s sample) bool { return s.phase == phase && s.endPhase == phase }
}

func both(a, b func(sample) bool) func(sample) bool {
	return func(s sample) bool { return a(s) && b(s) }
}

// only reports the outcomes other than want; empty when all were want.
func only(c map[string]int, want string) map[string]int {
	other := map[string]int{}
	for k, v := range c {
		if k != want {
			other[k] = v
		}
	}
	return other
}

// transportErrors counts failed RPCs and denials without the error body.
func transportErrors(samples []sample) map[string]int {
	bad := map[string]int{}
	for _, s := range samples {
		if strings.HasPrefix(s.outcome, "transport_") || strings.HasPrefix(s.outcome, "bad_body_") || s.outcome == "malformed_response" {
			bad[s.class+" "+s.outcome]++
		}
	}
	return bad
}

// quantiles returns p50, p99 and max latency of the matching samples.
func quantiles(samples []sample, keep func(sample) bool) (p50, p99, maxLat time.Duration) {
	var lat []time.Duration
	for _, s := range samples {
		if keep == nil || keep(s) {
			lat = append(lat, s.latency)
		}
	}
	if len(lat) == 0 {
		return 0, 0, 0
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[(len(lat)*99)/100], lat[len(lat)-1]
}

// fmtCounts renders outcome counts in a stable order: {200:10 401:3}.
func fmtCounts(c map[string]int) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, c[k])
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// figures are a drill's measured numbers, in the order they were added.
type figures struct {
	drill string
	keys  []string
	vals  map[string]any
}

func newFigures(drill string) *figures { return &figures{drill: drill, vals: map[string]any{}} }

// loadFigures are a load drill's figures, starting with its requests, their
// rate over elapsed and its workers.
func loadFigures(drill string, samples []sample, elapsed time.Duration, workers int) *figures {
	f := newFigures(drill)
	f.add("requests", len(samples))
	f.add("rps", rps(len(samples), elapsed))
	f.add("workers", workers)
	return f
}

func (f *figures) add(k string, v any) {
	if _, ok := f.vals[k]; !ok {
		f.keys = append(f.keys, k)
	}
	switch x := v.(type) {
	case time.Duration:
		v = x.Round(100 * time.Microsecond).String()
	case map[string]int:
		v = fmtCounts(x)
	case float64:
		v = strconv.FormatFloat(x, 'f', 1, 64)
	}
	f.vals[k] = v
}

// report logs the figures on one line and, with ODIN_DRILL_REPORT set,
// appends them to that file as one JSON object.
func (f *figures) report(t *testing.T) {
	t.Helper()
	f.add("load_average", loadAverage())
	parts := make([]string, len(f.keys))
	for i, k := range f.keys {
		parts[i] = fmt.Sprintf("%s=%v", k, f.vals[k])
	}
	t.Logf("drill %s: %s", f.drill, strings.Join(parts, " "))
	path := os.Getenv("ODIN_DRILL_REPORT")
	if path == "" {
		return
	}
	line, err := json.Marshal(map[string]any{"drill": f.drill, "time": time.Now().UTC().Format(time.RFC3339), "figures": f.vals})
	if err != nil {
		t.Errorf("encode drill report: %v", err)
		return
	}
	file, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("ODIN_DRILL_REPORT: %v", err)
		return
	}
	defer file.Close()
	if _, err := file.Write(append(line, '\n')); err != nil {
		t.Errorf("ODIN_DRILL_REPORT: %v", err)
	}
}

// loadAverage is the machine's 1-minute load average, for the record.
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	if f := strings.Fields(string(raw)); len(f) > 0 {
		return f[0]
	}
	return "unknown"
}

// long reports whether the long versions of the drills were asked for.
func long() bool { return os.Getenv("ODIN_LONG_TESTS") == "1" }

// pick returns short, or long under ODIN_LONG_TESTS=1.
func pick[T any](short, longer T) T {
	if long() {
		return longer
	}
	return short
}

// rps is requests per second over d.
func rps(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
