package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func queryInt(t *testing.T, url, sql string) (int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, sql).Scan(&n)
	return n, err
}

// The helper's whole life cycle: a primary, a streaming replica whose
// replay can be paused, a crash and a restart, a promotion.
func TestPostgresCluster(t *testing.T) {
	p := StartPostgresCluster(t)
	p.Exec("CREATE TABLE t (n int)")
	r := p.StartReplica(t)
	if r.Primary() != p || p.Primary() != nil || r.Port() == p.Port() {
		t.Fatal("replica and primary mixed up")
	}
	r.WaitCaughtUp(10 * time.Second)

	r.PauseReplay()
	p.Exec("INSERT INTO t VALUES (1)")
	time.Sleep(100 * time.Millisecond)
	if n, err := queryInt(t, r.URL(), "SELECT count(*) FROM t"); err != nil || n != 0 {
		t.Fatalf("paused replica sees %d rows (%v), want 0", n, err)
	}
	r.ResumeReplay()
	r.WaitCaughtUp(10 * time.Second)
	if n, err := queryInt(t, r.URL(), "SELECT count(*) FROM t"); err != nil || n != 1 {
		t.Fatalf("resumed replica sees %d rows (%v), want 1", n, err)
	}

	p.Kill()
	if _, err := queryInt(t, p.URL(), "SELECT 1"); err == nil {
		t.Fatal("killed primary still answers")
	}
	p.Start()
	p.Exec("INSERT INTO t VALUES (2)")
	r.WaitCaughtUp(15 * time.Second) // the replica reconnects by itself
	p.Stop()

	r.Promote()
	r.Exec("INSERT INTO t VALUES (3)")
	if n, err := queryInt(t, r.URL(), "SELECT count(*) FROM t"); err != nil || n != 3 {
		t.Fatalf("promoted replica has %d rows (%v), want 3", n, err)
	}
}
