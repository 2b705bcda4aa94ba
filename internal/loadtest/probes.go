package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// dial opens a plain gRPC client connection to a Check server.
func dial(addr string) (*grpc.ClientConn, authv3.AuthorizationClient, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, authv3.NewAuthorizationClient(conn), nil
}

// warmUp presents every credential once (eight at a time) so the cached
// scenarios measure cached checks, and counts answers that were not the
// expected decision ("allow" or "deny"; "" checks nothing).
func warmUp(ctx context.Context, addr string, list []credential, expect string) (int, error) {
	conn, client, err := dial(addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var mismatch, failed atomic.Int64
	var firstErr atomic.Value
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(list)) || ctx.Err() != nil {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				resp, err := client.Check(cctx, checkRequest(list[i], i))
				cancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				allowed := resp.GetStatus().GetCode() == 0
				if (expect == "allow" && !allowed) || (expect == "deny" && allowed) {
					mismatch.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return 0, fmt.Errorf("%d of %d checks failed, first: %v", n, len(list), firstErr.Load())
	}
	return int(mismatch.Load()), ctx.Err()
}

// BurstResult is one burst probe: many concurrent checks of one key that no
// cache holds, which must reach PostgreSQL exactly once (the misses are
// collapsed into one query).
type BurstResult struct {
	Profile      string  `json:"profile"`
	Concurrent   int     `json:"concurrent"`
	Allowed      int64   `json:"allowed"`
	Errors       int64   `json:"errors"`
	StoreQueries float64 `json:"store_queries"`
	RedisLookups float64 `json:"redis_hits"`
	MillisTotal  float64 `json:"ms_total"`
	LoadAvg      string  `json:"loadavg"`
}

// burstProbe sends cfg.Burst checks of key idx at once: every goroutine
// waits on one gate, opened when all are ready and the connection is up.
func (h *harness) burstProbe(ctx context.Context, odin *Process, prof string, m *material, idx int) (BurstResult, error) {
	r := BurstResult{Profile: prof, Concurrent: h.cfg.Burst, LoadAvg: LoadAvg()}
	conn, client, err := dial(odin.Addrs["grpc"])
	if err != nil {
		return r, err
	}
	defer conn.Close()
	// A check with no credential opens the connection and touches no store.
	if _, err := client.Check(ctx, checkRequest(credential{}, 0)); err != nil {
		return r, fmt.Errorf("burst probe: %w", err)
	}
	before, err := scrapeCounters(ctx, odin.Addrs["ops"])
	if err != nil {
		return r, err
	}
	req := checkRequest(apiKey(m.keys.Known(idx)), 1)
	gate := make(chan struct{})
	var ready, done sync.WaitGroup
	var allowed, failed atomic.Int64
	for range h.cfg.Burst {
		ready.Add(1)
		done.Go(func() {
			ready.Done()
			<-gate
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			resp, err := client.Check(cctx, req)
			switch {
			case err != nil:
				failed.Add(1)
			case resp.GetStatus().GetCode() == 0:
				allowed.Add(1)
			}
		})
	}
	ready.Wait()
	start := time.Now()
	close(gate)
	done.Wait()
	r.MillisTotal = float64(time.Since(start).Microseconds()) / 1000
	after, err := scrapeCounters(ctx, odin.Addrs["ops"])
	if err != nil {
		return r, err
	}
	d := before.delta(after)
	r.Allowed, r.Errors = allowed.Load(), failed.Load()
	r.StoreQueries = d.sum("odin_keystore_store_queries_total")
	r.RedisLookups = d.sum("odin_keystore_lookups_total", `tier="redis"`)
	h.log.Info("burst probe", "profile", prof, "concurrent", h.cfg.Burst, "store_queries", r.StoreQueries, "allowed", r.Allowed)
	return r, nil
}

// FloodCheck compares the PostgreSQL queries a flood of unknown keys
// caused on odin with the bound "at most one query per distinct key per
// negative TTL": for a run of T seconds, distinct × (⌊T/TTL⌋ + 1).
type FloodCheck struct {
	DistinctKeys  int64   `json:"distinct_keys"`
	Seconds       float64 `json:"seconds"`
	NegativeTTL   float64 `json:"negative_ttl_seconds"`
	StoreQueries  float64 `json:"store_queries"`
	Bound         float64 `json:"bound"`
	WithinBound   bool    `json:"within_bound"`
	QueriesPerKey float64 `json:"queries_per_key"`
}

func (f *FloodCheck) add(st *runStats, delta counters, distinct int64, ttl time.Duration) {
	d := min(distinct, st.requests)
	// A key is queried at most once per TTL, so at most ⌊T/TTL⌋+1 times in
	// any window of T seconds, whenever its entry was made.
	secs := st.elapsed.Seconds()
	f.DistinctKeys = max(f.DistinctKeys, d)
	f.Seconds += secs
	f.NegativeTTL = ttl.Seconds()
	f.StoreQueries += delta.sum("odin_keystore_store_queries_total")
	f.Bound += float64(d) * float64(int64(secs/ttl.Seconds())+1)
}

func (f *FloodCheck) finish() {
	f.WithinBound = f.StoreQueries <= f.Bound
	if f.DistinctKeys > 0 {
		f.QueriesPerKey = f.StoreQueries / float64(f.DistinctKeys)
	}
}

// RSSResult is the memory a server needs per cached key: its resident set
// and Go heap before and after checking Keys distinct keys once each.
type RSSResult struct {
	Keys          int     `json:"keys"`
	CacheSizeFlag int     `json:"cache_size_flag"`
	StoreLookups  float64 `json:"store_lookups"`
	WarmSeconds   float64 `json:"warm_seconds"`
	// SettleSeconds is how long after the warm-up the probe waited for a
	// garbage collection, so the figures hold live data, not garbage.
	SettleSeconds float64 `json:"settle_seconds"`
	GCAfterWarm   bool    `json:"gc_after_warm"`
	RSSBefore     int64   `json:"rss_before_bytes"`
	RSSAfter      int64   `json:"rss_after_bytes"`
	RSSPerKey     float64 `json:"rss_bytes_per_key"`
	// HeapBefore is the heap allocated before the warm-up; LiveHeapAfter the
	// heap live at the last collection after it (next GC goal ÷ (1+GOGC/100)).
	HeapBefore     float64 `json:"heap_before_bytes"`
	LiveHeapAfter  float64 `json:"live_heap_after_bytes"`
	LiveHeapPerKey float64 `json:"live_heap_bytes_per_key"`
	LoadAvg        string  `json:"loadavg"`
	// Server holds the deltas of the server's counters over the warm-up.
	Server map[string]float64 `json:"server_counters,omitempty"`
	// Requests and Errors are the warm-up's, as the generator saw them.
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
}

// rssProbe starts a server with an LRU large enough for RSSKeys keys and no
// Redis, reads its memory, checks RSSKeys distinct keys once each (32 at a
// time), waits (up to RSSSettle) for a garbage collection after the
// warm-up, and reads it again.
func (h *harness) rssProbe(ctx context.Context, m *material) (RSSResult, error) {
	n := h.cfg.RSSKeys
	r := RSSResult{Keys: n, CacheSizeFlag: n + n/10 + 1000, LoadAvg: LoadAvg()}
	odin, err := h.startOdin(ctx, odinOptions{profile: "rss", cacheSize: r.CacheSizeFlag, extra: []string{"--usage-interval", "1s"}})
	if err != nil {
		return r, err
	}
	defer odin.Stop()
	time.Sleep(time.Second)
	before, err := scrapeCounters(ctx, odin.Addrs["ops"])
	if err != nil {
		return r, err
	}
	if r.RSSBefore, err = RSS(odin.PID()); err != nil {
		return r, err
	}
	r.HeapBefore = before["go_memstats_heap_alloc_bytes"]
	start := time.Now()
	st, err := runGRPC(ctx, run{addr: odin.Addrs["grpc"], concurrency: 32, connections: h.cfg.Connections,
		requests: int64(n), duration: h.cfg.MaxTime, timeout: h.cfg.Timeout,
		cred: func(i int64) credential { return apiKey(m.keys.Known(int(i))) }})
	if err != nil {
		return r, fmt.Errorf("rss probe: %w", err)
	}
	r.Requests, r.Errors = st.requests, st.errors
	warmed := time.Now()
	r.WarmSeconds = warmed.Sub(start).Seconds()
	after, err := h.awaitGC(ctx, odin, warmed)
	if err != nil {
		return r, err
	}
	r.SettleSeconds = time.Since(warmed).Seconds()
	r.GCAfterWarm = after["go_memstats_last_gc_time_seconds"] >= float64(warmed.UnixNano())/1e9
	if r.RSSAfter, err = RSS(odin.PID()); err != nil {
		return r, err
	}
	gogc := after["go_gc_gogc_percent"]
	if gogc <= 0 {
		gogc = 100
	}
	r.LiveHeapAfter = after["go_memstats_next_gc_bytes"] / (1 + gogc/100)
	d := before.delta(after)
	r.Server = d
	r.StoreLookups = d.sum("odin_keystore_lookups_total", `tier="store"`)
	r.RSSPerKey = float64(r.RSSAfter-r.RSSBefore) / float64(n)
	r.LiveHeapPerKey = (r.LiveHeapAfter - r.HeapBefore) / float64(n)
	h.log.Info("rss probe", "keys", n, "rss_per_key", int(r.RSSPerKey), "live_heap_per_key", int(r.LiveHeapPerKey), "gc_after_warm", r.GCAfterWarm)
	return r, nil
}

// awaitGC polls the server's metrics until a collection has run since t
// (Go forces one at least every two minutes) or RSSSettle has passed, and
// at least a second, so the last answers' bookkeeping is counted too.
func (h *harness) awaitGC(ctx context.Context, odin *Process, t time.Time) (counters, error) {
	deadline := t.Add(max(h.cfg.RSSSettle, time.Second))
	time.Sleep(time.Second)
	for {
		c, err := scrapeCounters(ctx, odin.Addrs["ops"])
		if err != nil {
			return nil, err
		}
		if c["go_memstats_last_gc_time_seconds"] >= float64(t.UnixNano())/1e9 || !time.Now().Before(deadline) {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
