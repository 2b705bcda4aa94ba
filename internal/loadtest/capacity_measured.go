package loadtest

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// NamedReport is a report and the name it is cited by.
type NamedReport struct {
	Name   string
	Report *Report
}

// pooledScenario is one scenario's odin measurements over every report,
// summed.
type pooledScenario struct {
	name        string
	requests    float64
	cpuSec      float64
	ctr         counters
	netPGUS     float64
	pgQueries   float64
	netRedisUS  float64
	netCalls    float64
	cmds        map[string]RedisCommandStat
	pg, redis   bool
	cites       []string
	concurrency []int
}

func (p *pooledScenario) perReq() float64 { return p.cpuSec * 1e6 / p.requests }

// tierFractions are the shares of the key lookups answered by the LRU,
// Redis and PostgreSQL.
func (p *pooledScenario) tierFractions() (lru, redis, store float64, ok bool) {
	l := p.ctr.sum("odin_keystore_lookups_total", `tier="lru"`)
	r := p.ctr.sum("odin_keystore_lookups_total", `tier="redis"`)
	s := p.ctr.sum("odin_keystore_lookups_total", `tier="store"`)
	t := l + r + s
	if t <= 0 {
		return 0, 0, 0, false
	}
	return l / t, r / t, s / t, true
}

func (p *pooledScenario) cite() string {
	return fmt.Sprintf("%s, %s c=%s (%.0f checks)", strings.Join(p.cites, " + "), p.name, joinIntList(p.concurrency), p.requests)
}

func joinIntList(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(slices.Compact(s), ",")
}

// poolScenarios gathers the odin side of every scenario; concurrency 0
// takes each report's highest measured concurrency for the scenario.
func poolScenarios(reps []NamedReport, concurrency int) map[string]*pooledScenario {
	out := map[string]*pooledScenario{}
	for _, nr := range reps {
		top := map[string]int{}
		for _, res := range nr.Report.Results {
			top[res.Scenario] = max(top[res.Scenario], res.Concurrency)
		}
		for _, res := range nr.Report.Results {
			want := concurrency
			if want == 0 {
				want = top[res.Scenario]
			}
			if res.Concurrency != want || res.Odin.Requests == 0 || res.Odin.ServerCPUNotMeasured {
				continue
			}
			p := out[res.Scenario]
			if p == nil {
				p = &pooledScenario{name: res.Scenario, ctr: counters{}, cmds: map[string]RedisCommandStat{}, pg: true, redis: true}
				out[res.Scenario] = p
			}
			reqs := float64(res.Odin.Requests)
			p.requests += reqs
			p.cpuSec += res.Odin.ServerCPUSeconds
			for k, v := range res.Odin.Server {
				p.ctr[k] += v
			}
			if s := res.Odin.Store; s != nil {
				n := NetStoreCost(res)
				p.netPGUS += n.PGCPUPerReqUS * reqs
				p.pgQueries += s.PGQueries
				p.netRedisUS += n.RedisCPUPerReqUS * reqs
				p.netCalls += n.RedisCallsPerReq * reqs
				p.pg = p.pg && s.PGMeasured
				p.redis = p.redis && s.RedisMeasured
				for k, c := range s.RedisCommands {
					cur := p.cmds[k]
					p.cmds[k] = RedisCommandStat{Calls: cur.Calls + c.Calls, Usec: cur.Usec + c.Usec}
				}
			} else {
				p.pg, p.redis = false, false
			}
			if !slices.Contains(p.cites, nr.Name) {
				p.cites = append(p.cites, nr.Name)
			}
			p.concurrency = append(p.concurrency, res.Concurrency)
		}
	}
	return out
}

// CapacityInputsFromReports fills the measured inputs of in from the
// reports and returns notes on what it derived or could not find. An input
// with no measurement is left as it is (zero unless set).
func CapacityInputsFromReports(in *CapacityInputs, reps []NamedReport, concurrency int) []string {
	d := &inputDeriver{in: in, sc: poolScenarios(reps, concurrency)}
	// The order matters: later steps read what earlier ones set.
	cStore, pStore := d.keyPaths()
	d.invalidAndSessions()
	d.redisRoundTrip(cStore, pStore)
	d.redisCosts()
	d.pgQueryCost()
	d.probes(reps)
	return d.notes
}

// inputDeriver is one CapacityInputsFromReports: the inputs it fills, the
// pooled scenarios it reads and the notes it writes.
type inputDeriver struct {
	in    *CapacityInputs
	sc    map[string]*pooledScenario
	notes []string
}

// set puts a usable value v into the input named flag, citing src.
func (d *inputDeriver) set(flag string, v float64, src string) {
	if v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) {
		for _, f := range d.in.Fields() {
			if f.Flag == flag {
				*f.Ptr = v
			}
		}
		d.in.Sources[flag] = src
	}
}

// raw is a scenario's odin CPU per check, µs, and the scenario; nil when
// it was not measured.
func (d *inputDeriver) raw(name string) (float64, *pooledScenario) {
	if p := d.sc[name]; p != nil && p.requests > 0 {
		return p.perReq(), p
	}
	return 0, nil
}

// keyPaths sets the three API-key path costs, decomposed by the tier
// counters (each scenario is mostly one path, but cold-key-redis meets
// Redis hits when its walk wraps, and redis-key PostgreSQL when entries
// expire). It returns the store path's cost and scenario, which
// redisRoundTrip reads.
func (d *inputDeriver) keyPaths() (float64, *pooledScenario) {
	cLRU, pLRU := d.raw("cached-key")
	cRedis, pRedis := d.raw("redis-key")
	cStore, pStore := d.raw("cold-key-redis")
	decomposed := false
	if pLRU != nil && pRedis != nil && pStore != nil {
		var a [3][3]float64
		okAll := true
		for i, p := range []*pooledScenario{pLRU, pRedis, pStore} {
			l, r, s, ok := p.tierFractions()
			okAll = okAll && ok
			a[i] = [3]float64{l, r, s}
		}
		if okAll {
			if x, ok := solve3(a, [3]float64{cLRU, cRedis, cStore}); ok && x[0] > 0 && x[1] > 0 && x[2] > 0 {
				cLRU, cRedis, cStore, decomposed = x[0], x[1], x[2], true
			}
		}
		if !decomposed {
			d.notes = append(d.notes, "the key-path costs could not be separated by the tier counters: each scenario's cost is taken as its path's")
		}
	}
	how := "odin CPU/check"
	if decomposed {
		how = "odin CPU/check, separated by the tier counters of cached-key, redis-key and cold-key-redis"
	}
	if pLRU != nil {
		d.set("key-lru-us", cLRU, "measured: "+pLRU.cite()+": "+how)
	}
	if pRedis != nil {
		d.set("key-redis-us", cRedis, "measured: "+pRedis.cite()+": "+how)
	}
	if pStore != nil {
		d.set("key-store-us", cStore, "measured: "+pStore.cite()+": "+how)
	}
	return cStore, pStore
}

// invalidAndSessions sets the unknown-key and session path costs.
func (d *inputDeriver) invalidAndSessions() {
	in := d.in
	if c, p := d.raw("invalid-flood"); p != nil {
		src := "measured: " + p.cite() + ": odin CPU/check"
		if l, r, s, ok := p.tierFractions(); ok && l >= 0.5 && in.KeyRedisUS > 0 && in.KeyStoreUS > 0 {
			if neg := (c - r*in.KeyRedisUS - s*in.KeyStoreUS) / l; neg > 0 {
				c, src = neg, src+", less its share of Redis and PostgreSQL lookups"
			}
		}
		d.set("invalid-us", c, src)
	}
	if c, p := d.raw("cached-session"); p != nil {
		d.set("session-lru-us", c, "measured: "+p.cite()+": odin CPU/check")
	}
	if c, p := d.raw("jwt-first-sight"); p != nil {
		d.set("session-first-us", c, "measured: "+p.cite()+": odin CPU/check")
	}
}

// redisRoundTrip sets the cost of a Redis round trip in odin, and the
// session Redis path derived from it.
func (d *inputDeriver) redisRoundTrip(cStore float64, pStore *pooledScenario) {
	in := d.in
	if in.KeyRedisUS > in.KeyLRUUS && in.KeyLRUUS > 0 {
		rt := in.KeyRedisUS - in.KeyLRUUS
		d.set("redis-round-trip-us", rt, "derived: key-redis-us − key-lru-us (a Redis round trip with a record to decode and prepare: an upper bound)")
		if in.SessionLRUUS > 0 {
			d.set("session-redis-us", in.SessionLRUUS+rt, "derived: session-lru-us + key-redis-us − key-lru-us (a Redis GET of a record, decoded)")
		}
	}
	// A bare round trip (a lease, a miss, a SET): cold-key-redis costs
	// cold-key's path (PostgreSQL, no Redis) plus its Redis commands.
	if cold, pc := d.raw("cold-key"); pc != nil && pStore != nil && pStore.redis && pStore.netCalls > 0 {
		calls := pStore.netCalls / pStore.requests
		if rt := (cStore - cold) / calls; calls >= 1 && rt > 0 {
			d.set("redis-round-trip-us", rt, fmt.Sprintf("derived: (key-store-us − cold-key's %.1f µs/check) ÷ the %.2f Redis commands of a cold-key-redis check (%s; %s): a round trip with no record to decode",
				cold, calls, pc.cite(), pStore.cite()))
		}
	}
}

// redisHeavy are the scenarios whose Redis CPU prices a command.
var redisHeavy = []string{"redis-key", "cold-key-redis", "jwt-first-sight"}

// redisCosts sets Redis's CPU per command over the Redis-heavy scenarios,
// net of the background, and the lease script's extra from INFO
// commandstats.
func (d *inputDeriver) redisCosts() {
	var rUS, rCalls float64
	var rCites []string
	cmds := map[string]RedisCommandStat{}
	for _, name := range redisHeavy {
		if p := d.sc[name]; p != nil && p.redis && p.netCalls > 0 {
			rUS += p.netRedisUS
			rCalls += p.netCalls
			rCites = append(rCites, p.cite())
		}
	}
	for _, p := range d.sc {
		for k, c := range p.cmds {
			cur := cmds[k]
			cmds[k] = RedisCommandStat{Calls: cur.Calls + c.Calls, Usec: cur.Usec + c.Usec}
		}
	}
	var extra float64
	if e, g := cmds["evalsha"], cmds["get"]; e.Calls > 0 && g.Calls > 0 {
		extra = float64(e.Usec)/float64(e.Calls) - float64(g.Usec)/float64(g.Calls)
		if extra > 0 {
			d.set("redis-lease-extra-us", extra, fmt.Sprintf("measured: INFO commandstats over every odin run: EVALSHA %.1f µs/call (the script's own commands included) − GET %.1f µs/call",
				float64(e.Usec)/float64(e.Calls), float64(g.Usec)/float64(g.Calls)))
		}
	}
	if rCalls > 0 {
		// The leases among those commands cost the script's extra on top.
		var leases float64
		for _, name := range redisHeavy {
			if p := d.sc[name]; p != nil && p.redis && p.netCalls > 0 {
				leases += float64(p.cmds["evalsha"].Calls)
			}
		}
		op := (rUS - leases*max(extra, 0)) / rCalls
		if op <= 0 {
			op = rUS / rCalls
		}
		d.set("redis-op-us", op, "measured: "+strings.Join(rCites, "; ")+
			": redis-server CPU per command clients sent, net of background, less the lease script's extra")
	}
}

// pgQueryCost sets PostgreSQL's CPU per lookup over the cold scenarios,
// net of the background.
func (d *inputDeriver) pgQueryCost() {
	var pgUS, pgQ float64
	var pgCites []string
	for _, name := range []string{"cold-key-redis", "cold-key"} {
		if p := d.sc[name]; p != nil && p.pg && p.pgQueries > 0 {
			pgUS += p.netPGUS
			pgQ += p.pgQueries
			pgCites = append(pgCites, p.cite())
		}
	}
	if pgQ > 0 {
		d.set("pg-query-us", pgUS/pgQ, "measured: "+strings.Join(pgCites, "; ")+": postgres CPU per odin_keystore_store_queries_total, net of background")
	}
}

// probes sets what the reports' probes measured: PostgreSQL's CPU per
// usage row, the bytes of a Redis entry, and odin's RSS (from the report
// that probed the most keys).
func (d *inputDeriver) probes(reps []NamedReport) {
	var rss *RSSResult
	var rssFrom string
	for _, nr := range reps {
		for i := range nr.Report.RSS {
			if r := &nr.Report.RSS[i]; r.RSSAfter > 0 && (rss == nil || r.Keys > rss.Keys) {
				rss, rssFrom = r, nr.Name
			}
		}
		if w := nr.Report.StoreProcesses; w != nil {
			if u := w.Usage; u != nil {
				d.set("pg-usage-row-us", u.PGCPUPerRowUS, fmt.Sprintf("measured: %s, usage probe (%d × %d rows)", nr.Name, u.Batches, u.RowsPerBatch))
			}
			if v := w.RedisEntryBytes["key"]; v > 0 {
				d.set("redis-key-bytes", v, "measured: "+nr.Name+", MEMORY USAGE of odin's key entries after cold-key-redis")
			}
			if v := w.RedisEntryBytes["jwt"]; v > 0 {
				d.set("redis-session-bytes", v, "measured: "+nr.Name+", MEMORY USAGE of odin's session entries after jwt-first-sight")
			}
		}
	}
	if rss != nil {
		src := fmt.Sprintf("measured: %s, RSS probe (%d keys", rssFrom, rss.Keys)
		if !rss.GCAfterWarm {
			src += ", no GC after the warm-up"
		}
		d.set("base-rss", float64(rss.RSSBefore), src+"): RSS before the warm-up")
		d.set("key-entry-bytes", rss.RSSPerKey, src+"): RSS per key")
		d.set("session-entry-bytes", rss.RSSPerKey, "derived: key-entry-bytes (a session entry also holds a pre-rendered principal; not measured)")
	}
}

// solve3 solves a·x = b by Gaussian elimination with partial pivoting.
func solve3(a [3][3]float64, b [3]float64) ([3]float64, bool) {
	for c := range 3 {
		p := c
		for r := c + 1; r < 3; r++ {
			if math.Abs(a[r][c]) > math.Abs(a[p][c]) {
				p = r
			}
		}
		if math.Abs(a[p][c]) < 1e-9 {
			return [3]float64{}, false
		}
		a[c], a[p] = a[p], a[c]
		b[c], b[p] = b[p], b[c]
		for r := c + 1; r < 3; r++ {
			f := a[r][c] / a[c][c]
			for k := c; k < 3; k++ {
				a[r][k] -= f * a[c][k]
			}
			b[r] -= f * b[c]
		}
	}
	var x [3]float64
	for r := 2; r >= 0; r-- {
		s := b[r]
		for k := r + 1; k < 3; k++ {
			s -= a[r][k] * x[k]
		}
		x[r] = s / a[r][r]
	}
	return x, true
}
