package loadtest

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// latencies is an HDR histogram of request latencies in microseconds, from
// 1 µs to 60 s at three significant digits; the rounds of a measurement are
// merged into one before percentiles are read.
type latencies struct {
	h *hdrhistogram.Histogram
}

func newLatencies() *latencies {
	return &latencies{h: hdrhistogram.New(1, 60_000_000, 3)}
}

func (l *latencies) record(d time.Duration) {
	us := max(d.Microseconds(), 1)
	_ = l.h.RecordValue(min(us, l.h.HighestTrackableValue())) // clamped: never out of range
}

func (l *latencies) merge(o *latencies) { l.h.Merge(o.h) }

// percentile returns the latency at q (0-100) in microseconds.
func (l *latencies) percentile(q float64) float64 {
	if l.h.TotalCount() == 0 {
		return 0
	}
	return float64(l.h.ValueAtQuantile(q))
}

func (l *latencies) maxUS() float64 { return float64(l.h.Max()) }

// Measurement is what one server did under one scenario and concurrency,
// summed over the rounds.
type Measurement struct {
	Rounds   int   `json:"rounds"`
	Requests int64 `json:"requests"`
	// Errors are requests that got no answer (transport error, timeout).
	Errors int64 `json:"errors"`
	// NonOK are answers that denied: from the server's decision counter
	// (gRPC: ghz does not read responses) or the HTTP status. The baseline
	// always allows.
	NonOK      int64            `json:"non_ok"`
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	// Seconds is the measured wall time (sum over rounds); RPS is
	// Requests / Seconds.
	Seconds float64 `json:"seconds"`
	RPS     float64 `json:"rps"`
	P50US   float64 `json:"p50_us"`
	P90US   float64 `json:"p90_us"`
	P99US   float64 `json:"p99_us"`
	MaxUS   float64 `json:"max_us"`
	// ServerCPUSeconds is the server process's utime+stime over the runs;
	// ServerCPUPerReqUS divides it by Requests: the fair figure on a
	// machine where the generator competes for the same cores.
	ServerCPUSeconds  float64 `json:"server_cpu_seconds"`
	ServerCPUPerReqUS float64 `json:"server_cpu_per_req_us"`
	// ServerCPUNotMeasured: the load went to a proxy the harness did not
	// start, so no server process was watched.
	ServerCPUNotMeasured bool `json:"server_cpu_not_measured,omitempty"`
	// LoadCPUPerReqUS is the load generator's own CPU per request.
	LoadCPUPerReqUS float64 `json:"load_cpu_per_req_us"`
	// LoadAvg is /proc/loadavg (1, 5, 15 min) when each round started.
	LoadAvg []string `json:"loadavg"`
	// Server holds deltas of the server's own counters over the runs
	// (lookups by tier, PostgreSQL queries, decisions); odin only.
	Server map[string]float64 `json:"server_counters,omitempty"`
	// Store is the local PostgreSQL's and Redis's CPU over the same runs
	// (storecpu.go); nil when not measured.
	Store *StoreCPU `json:"store,omitempty"`
	// OwnShare and StoreWait are odin's time inside Check, split: waiting
	// for PostgreSQL or Redis (only the checks that waited), and the rest,
	// its own share (every check). From the changes of
	// odin_authz_check_own_seconds and odin_authz_check_store_wait_seconds
	// over the runs: bucket estimates. Nil for the baseline, for an odin
	// that does not export them, and with no check that waited.
	OwnShare  *BucketQuantiles `json:"own_share,omitempty"`
	StoreWait *BucketQuantiles `json:"store_wait,omitempty"`

	lat          *latencies
	serverCPU    time.Duration
	warmMismatch int
	loadCPU      time.Duration
}

// add folds one round in.
func (m *Measurement) add(st *runStats, serverCPU, loadCPU time.Duration, loadAvg string, counters map[string]float64) {
	if m.lat == nil {
		m.lat = newLatencies()
		m.ErrorKinds = map[string]int64{}
	}
	m.Rounds++
	m.Requests += st.requests
	m.Errors += st.errors
	m.NonOK += st.nonOK
	for k, v := range st.kinds {
		m.ErrorKinds[k] += v
	}
	m.Seconds += st.elapsed.Seconds()
	m.lat.merge(st.lat)
	m.serverCPU += serverCPU
	m.loadCPU += loadCPU
	m.LoadAvg = append(m.LoadAvg, loadAvg)
	for k, v := range counters {
		if m.Server == nil {
			m.Server = map[string]float64{}
		}
		m.Server[k] += v
	}
}

// finish computes the derived figures.
func (m *Measurement) finish() {
	if m.lat == nil {
		return
	}
	if m.Seconds > 0 {
		m.RPS = float64(m.Requests) / m.Seconds
	}
	m.P50US, m.P90US, m.P99US, m.MaxUS = m.lat.percentile(50), m.lat.percentile(90), m.lat.percentile(99), m.lat.maxUS()
	m.ServerCPUSeconds = m.serverCPU.Seconds()
	if m.Requests > 0 {
		m.ServerCPUPerReqUS = float64(m.serverCPU.Microseconds()) / float64(m.Requests)
		m.LoadCPUPerReqUS = float64(m.loadCPU.Microseconds()) / float64(m.Requests)
	}
	if len(m.ErrorKinds) == 0 {
		m.ErrorKinds = nil
	}
	m.finishStore()
	m.OwnShare = counters(m.Server).bucketQuantiles(ownSeconds)
	m.StoreWait = counters(m.Server).bucketQuantiles(storeWaitSeconds)
}
