package extauthz_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/keystore"
)

// probeStore answers KeyByHash with the key whose number is in the hash's
// first eight bytes, shaped like the load harness's seeded keys; the rest
// of keystore.Store is not used by a cache lookup.
type probeStore struct{ keystore.Store }

func (probeStore) KeyByHash(_ context.Context, h keystore.Hash) (*keystore.Key, error) {
	i := binary.LittleEndian.Uint64(h[:8])
	return &keystore.Key{ID: fmt.Sprintf("key_L%019d", i), UserID: "user_load_" + strconv.FormatUint(i%10_000, 10),
		Name: "load key " + strconv.FormatUint(i, 10), Hash: h, Hint: "odin_sk_abcd…wxyz",
		Scopes: []string{"scans:read", "scans:write"}, Tier: "enterprise", CreatedAt: time.Now()}, nil
}

// TestMemoryPerCachedKeyProbe fills a key cache (odin authz's: principals
// from PrincipalForKey, default hot tier) with ODIN_MEM_PROBE_KEYS keys
// through Lookup, then reports the live Go heap and the RSS they cost. It
// is a measuring tool, skipped unless the variable is set:
//
//	ODIN_MEM_PROBE_KEYS=1000000 go test -run MemoryPerCachedKeyProbe -v ./extauthz/
func TestMemoryPerCachedKeyProbe(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("ODIN_MEM_PROBE_KEYS"))
	if n <= 0 {
		t.Skip("set ODIN_MEM_PROBE_KEYS to the number of keys to cache")
	}
	liveBefore, rssBefore := settledMemory(t)
	cache, err := keystore.NewCache(probeStore{}, nil, keystore.CacheOptions{Size: n, TTL: time.Hour},
		extauthz.PrincipalForKey, keystore.NewMetrics(nil), authztest.DiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, now := context.Background(), time.Now()
	var h keystore.Hash
	for i := range n {
		binary.LittleEndian.PutUint64(h[:8], uint64(i))
		binary.LittleEndian.PutUint64(h[8:16], uint64(i)*0x9E3779B97F4A7C15) // spread over the shards
		if _, err := cache.Lookup(ctx, h, now); err != nil {
			t.Fatal(err)
		}
	}
	rssPeak := rss(t)
	liveAfter, rssAfter := settledMemory(t)
	if cache.Len() != n {
		t.Fatalf("Len = %d, want %d", cache.Len(), n)
	}
	perKey := func(a, b uint64) float64 { return float64(int64(b)-int64(a)) / float64(n) }
	live := perKey(liveBefore, liveAfter)
	offHeap := perKey(rssBefore, rssAfter) - live
	t.Logf("%d keys: live Go heap %.0f B/key; RSS %.0f B/key after the fill, %.0f B/key after a GC and scavenge (off-heap ≈ %.0f B/key); "+
		"steady state at GOGC=100 ≈ off-heap + 2 × live = %.0f B/key",
		n, live, perKey(rssBefore, rssPeak), perKey(rssBefore, rssAfter), offHeap, offHeap+2*live)
	runtime.KeepAlive(cache)
}

// settledMemory collects garbage, returns freed memory to the OS, and
// reads the live heap and the process's RSS.
func settledMemory(t *testing.T) (live, rssBytes uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), rss(t)
}

// rss reads VmRSS from /proc/self/status.
func rss(t *testing.T) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status: ", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}
