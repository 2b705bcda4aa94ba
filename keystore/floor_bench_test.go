package keystore_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

// processCPU is the process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFirstSightRedisFloor: the client side of each Redis round trip
// a first sight of a session token makes when nothing shares it (one check
// at a time, as at a low paced rate), in CPU per operation (cpu-µs/op,
// the process's, GC included): the pipelined read of the session entry and
// the revocation marker, the lease of a new principal, and the session's
// SET (which the writer batches; this is one alone). Pin it (taskset) for
// steadier figures; BENCHMARKS.md (the floor) has them.
func BenchmarkFirstSightRedisFloor(b *testing.B) {
	url, prefix := testenv.Redis(b)
	rd, err := keystore.OpenRedis(keystore.RedisOptions{URL: url, Prefix: prefix, MACSecret: testenv.RedisMACSecret, Timeout: time.Second}, keystore.NewMetrics(nil), quiet())
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	ctx := context.Background()
	rs := keystore.NewRevokedSessions(nil, rd, time.Hour, quiet())
	run := func(b *testing.B, op func(i int)) {
		op(-1) // the connection
		start, n := processCPU(), 0
		for b.Loop() {
			op(n)
			n++
		}
		b.ReportMetric(float64(processCPU()-start)/float64(n)/1e3, "cpu-µs/op")
	}
	b.Run("read-session-and-revocation", func(b *testing.B) {
		run(b, func(i int) { rs.ReadWithMirror(ctx, rd, fmt.Sprint("jwt:", i), fmt.Sprint("sess_", i)) })
	})
	b.Run("lease-new-principal", func(b *testing.B) {
		l, err := ratelimit.New(rd.Conn().Client(), ratelimit.Options{Prefix: prefix + "rl:"}, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		run(b, func(i int) { l.Allow(ctx, fmt.Sprint("user_", i), "enterprise", time.Now()) })
	})
	b.Run("set-session-alone", func(b *testing.B) {
		val := make([]byte, 400)
		run(b, func(i int) { rd.SetRaw(ctx, fmt.Sprint("jwt:", i), val, time.Minute) })
	})
}
