package loadtest

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// runHTTP drives the forward-auth port (or a proxy in front of it) with
// vegeta: a fixed pool of workers, each sending its next GET as soon as its
// previous answer arrived, until the request count, the duration or ctx
// ends the run. Any answer but 200 counts as non-OK; answers that never
// came (connection errors, timeouts) count as errors.
func runHTTP(ctx context.Context, r run) (*runStats, error) {
	var next atomic.Int64
	target := r.addr + "/v1/scans?page=2"
	targeter := func(t *vegeta.Target) error {
		i := next.Add(1) - 1
		if i >= r.requests {
			return vegeta.ErrNoTargets
		}
		c := r.cred(i)
		t.Method, t.URL = http.MethodGet, target
		t.Header = http.Header{"X-Request-Id": {"req-load-" + strconv.FormatInt(i, 10)}}
		if c.header != "" {
			t.Header.Set(c.header, c.value)
		}
		return nil
	}
	workers := uint64(r.concurrency)
	atk := vegeta.NewAttacker(
		vegeta.Workers(workers), vegeta.MaxWorkers(workers),
		vegeta.Connections(r.concurrency), vegeta.KeepAlive(true),
		vegeta.Timeout(r.timeout), vegeta.MaxBody(0), vegeta.Redirects(vegeta.NoFollow),
	)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	st := &runStats{lat: newLatencies(), kinds: map[string]int64{}}
	var first, last vegeta.Result
	noTargets := vegeta.ErrNoTargets.Error()
	for res := range atk.Attack(targeter, boundedPacer{ctx: ctx, max: uint64(r.requests), dur: r.duration, rate: r.rate}, r.duration, "odin-load") {
		if res.Error == noTargets {
			continue
		}
		if st.requests == 0 || res.Timestamp.Before(first.Timestamp) {
			first = *res
		}
		if res.End().After(last.End()) {
			last = *res
		}
		st.requests++
		st.lat.record(res.Latency)
		switch {
		case res.Code == 0:
			st.errors++
			st.kinds[res.Error]++
		case res.Code != http.StatusOK:
			st.nonOK++
			st.kinds[strconv.Itoa(int(res.Code))]++
		}
	}
	st.issued = min(next.Load(), r.requests)
	if st.requests > 0 {
		st.elapsed = last.End().Sub(first.Timestamp)
	}
	return st, nil
}
