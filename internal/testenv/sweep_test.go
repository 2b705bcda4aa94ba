package testenv

import (
	"context"
	"os"
	"strconv"
	"testing"
)

// TestSweepDropsOnlyOrphans: a database named for a process that no longer
// exists is dropped; one named for a live process (this one) is kept.
func TestSweepDropsOnlyOrphans(t *testing.T) {
	ctx := context.Background()
	conn, err := adminConn(ctx)
	if err != nil {
		unavailable(t, "PostgreSQL", err)
	}
	defer conn.Close(ctx)
	dead := 1 << 22 // above the kernel's pid_max: never a live process
	for _, err := os.Stat("/proc/" + strconv.Itoa(dead)); err == nil; _, err = os.Stat("/proc/" + strconv.Itoa(dead)) {
		dead++
	}
	orphan := "odin_t_" + strconv.Itoa(dead) + "_" + RandomSuffix()
	mine := "odin_t_" + ownedName()
	for _, name := range []string{orphan, mine} {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dropDatabase(name) })
	}
	sweepOrphans(ctx, conn)
	exists := func(name string) bool {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	if exists(orphan) {
		t.Errorf("%s, whose process is gone, was not dropped", orphan)
	}
	if !exists(mine) {
		t.Errorf("%s, this live process's, was dropped", mine)
	}
}
