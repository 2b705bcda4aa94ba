package loadtest

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseCommandStats(t *testing.T) {
	in := "# Commandstats\r\ncmdstat_get:calls=21,usec=175,usec_per_call=8.33,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_evalsha:calls=3,usec=60,usec_per_call=20.00,rejected_calls=0,failed_calls=1\r\nused_memory:1\r\n"
	got := parseCommandStats(strings.NewReader(in))
	if len(got) != 2 || got["get"] != (RedisCommandStat{Calls: 21, Usec: 175}) || got["evalsha"] != (RedisCommandStat{Calls: 3, Usec: 60}) {
		t.Errorf("parseCommandStats = %+v", got)
	}
}

func TestAddStoreAndNetCost(t *testing.T) {
	a := storeSnapshot{pgOK: true, redisOK: true, pg: time.Second, redis: time.Second,
		cmds: map[string]RedisCommandStat{"get": {Calls: 100, Usec: 1000}}}
	b := storeSnapshot{pgOK: true, redisOK: true, pg: 1200 * time.Millisecond, redis: 1100 * time.Millisecond,
		cmds: map[string]RedisCommandStat{"get": {Calls: 1100, Usec: 6000}, "set": {Calls: 10, Usec: 50}}}
	res := Result{Odin: Measurement{Requests: 1000, Seconds: 1}, Baseline: Measurement{Requests: 1000, Seconds: 1}}
	res.Odin.addStore(a, b, counters{"odin_keystore_store_queries_total{result=\"found\"}": 500})
	res.Odin.finishStore()
	s := res.Odin.Store
	if s.PGCPUPerQueryUS != 400 || s.RedisCalls != 1010 || s.RedisCPUPerReqUS != 100 || s.PGCPUPerReqUS != 200 {
		t.Errorf("store figures %+v", *s)
	}
	// Background: 50 ms/s of PostgreSQL, 10 calls/s of Redis.
	bg := storeSnapshot{pgOK: true, redisOK: true, pg: 1050 * time.Millisecond, redis: time.Second,
		cmds: map[string]RedisCommandStat{"get": {Calls: 110, Usec: 1010}}}
	res.Baseline.addStore(a, bg, nil)
	res.Baseline.finishStore()
	n := NetStoreCost(res)
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9*max(1, math.Abs(b)) }
	if !near(n.PGCPUPerQueryUS, 300) || !near(n.RedisCallsPerReq, 1) || !near(n.BackgroundPGCores, 0.05) {
		t.Errorf("net cost %+v", n)
	}
	// A failed read leaves the store out.
	var m Measurement
	m.addStore(storeSnapshot{}, b, nil)
	if m.Store != nil {
		t.Errorf("a snapshot pair with no readings made %+v", m.Store)
	}
}

func TestPostgresCPUReadsProc(t *testing.T) {
	n, cpu, err := postgresCPU()
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("no local postgres process under CI")
		}
		t.Skip("SKIPPED: no local postgres process")
	}
	if cpu < 0 {
		t.Errorf("postgres CPU %v", cpu)
	}
}

func TestNetworkCallsLeaveScriptCommandsOut(t *testing.T) {
	// Two leases (EVALSHA running TIME, GET, SET) and three GETs and a SET
	// of the key tier.
	cmds := map[string]RedisCommandStat{"evalsha": {Calls: 2}, "time": {Calls: 2}, "get": {Calls: 5}, "set": {Calls: 3}}
	if got := networkCalls(cmds); got != 6 {
		t.Errorf("networkCalls = %d, want 6", got)
	}
}
