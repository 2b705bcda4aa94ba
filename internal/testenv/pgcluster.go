package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PGCluster is a private PostgreSQL cluster a test owns: a primary started
// by StartPostgresCluster, or a streaming replica of one started by
// StartReplica. Failure drills stop, kill and restart it; replica tests
// pause its replay to make it lag. It listens on a loopback port of its own
// with trust authentication (replication included) and is destroyed when
// the test ends.
//
// The binaries come from ODIN_TEST_PG_BIN, else /usr/lib/postgresql/15/bin,
// else PATH. Running as root, they run as the postgres user (runuser), since
// PostgreSQL refuses to run as root.
type PGCluster struct {
	t       testing.TB
	port    int
	dir     string // owned by the server's user: data/, the socket, the log
	primary *PGCluster
}

const pgClusterUser = "postgres"

// StartPostgresCluster initialises and starts a new primary (wal_level
// replica, fsync off: fast and disposable). It skips the test when the
// PostgreSQL binaries are missing, or fails under CI=true.
func StartPostgresCluster(t testing.TB) *PGCluster {
	t.Helper()
	c := newPGCluster(t, nil)
	start := time.Now()
	c.run("initdb", "-D", c.dataDir(), "-U", pgClusterUser, "-A", "trust", "-E", "UTF8",
		"--no-sync", "--no-instructions")
	c.writeFile("pg_hba.conf", ""+
		"local all all trust\n"+
		"host all all 127.0.0.1/32 trust\n"+
		"local replication all trust\n"+
		"host replication all 127.0.0.1/32 trust\n")
	c.appendConf(`
fsync = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 100
wal_level = replica
max_wal_senders = 8
wal_keep_size = 128MB
wal_writer_delay = 10ms
hot_standby = on
wal_receiver_status_interval = 1s
wal_retrieve_retry_interval = 100ms
log_min_messages = warning
`)
	c.Start()
	t.Logf("private PostgreSQL primary on port %d ready in %v", c.port, time.Since(start).Round(time.Millisecond))
	return c
}

// StartReplica makes a streaming replica of c (pg_basebackup -R) on another
// port and waits until it accepts connections. It is a hot standby: it
// answers reads and replays c's WAL as it arrives.
func (c *PGCluster) StartReplica(t testing.TB) *PGCluster {
	t.Helper()
	r := newPGCluster(t, c)
	start := time.Now()
	r.run("pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(c.port), "-U", pgClusterUser,
		"-D", r.dataDir(), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync")
	r.Start()
	t.Logf("private PostgreSQL replica on port %d (of %d) ready in %v", r.port, c.port, time.Since(start).Round(time.Millisecond))
	return r
}

func newPGCluster(t testing.TB, primary *PGCluster) *PGCluster {
	t.Helper()
	if _, err := pgBinary("pg_ctl"); err != nil {
		unavailable(t, "PostgreSQL binaries (initdb, pg_ctl, pg_basebackup)", err)
	}
	dir, err := os.MkdirTemp("", "odin-pg-")
	if err != nil {
		t.Fatalf("pg cluster dir: %v", err)
	}
	c := &PGCluster{t: t, port: FreePort(t), dir: dir, primary: primary}
	if err := c.chown(dir); err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("pg cluster dir: %v", err)
	}
	t.Cleanup(c.destroy)
	return c
}

// URL is a connection URL for the postgres database as the postgres
// superuser.
func (c *PGCluster) URL() string { return c.DatabaseURL("postgres") }

// DatabaseURL is a connection URL for another database on the cluster.
func (c *PGCluster) DatabaseURL(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", pgClusterUser, c.port, db)
}

// Port is the cluster's TCP port.
func (c *PGCluster) Port() int { return c.port }

// Primary is the cluster a replica streams from; nil for a primary.
func (c *PGCluster) Primary() *PGCluster { return c.primary }

// Start starts the (stopped or killed) server and waits until it accepts
// connections. It is what a restart after Stop or Kill calls too.
func (c *PGCluster) Start() {
	c.t.Helper()
	// Settings given on the command line win over the configuration the
	// replica copied from its primary.
	opts := fmt.Sprintf("-c port=%d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s", c.port, c.dir)
	c.run("pg_ctl", "start", "-D", c.dataDir(), "-w", "-t", "30", "-l", c.logFile(), "-o", opts)
	c.waitAccepting(10 * time.Second)
}

// Stop shuts the server down cleanly (pg_ctl stop -m fast).
func (c *PGCluster) Stop() { c.stop("fast") }

// Kill stops the server as a crash would (pg_ctl stop -m immediate): no
// shutdown checkpoint, crash recovery on the next Start.
func (c *PGCluster) Kill() { c.stop("immediate") }

func (c *PGCluster) stop(mode string) {
	c.t.Helper()
	c.run("pg_ctl", "stop", "-D", c.dataDir(), "-w", "-t", "30", "-m", mode)
}

// PauseReplay stops a replica applying WAL (pg_wal_replay_pause), so it lags
// behind its primary from now on; it returns once replay is paused.
func (c *PGCluster) PauseReplay() {
	c.t.Helper()
	c.mustBeReplica("PauseReplay")
	c.Exec("SELECT pg_wal_replay_pause()")
	deadline := time.Now().Add(10 * time.Second)
	for c.queryString("SELECT pg_get_wal_replay_pause_state()") != "paused" {
		if time.Now().After(deadline) {
			c.t.Fatal("replica replay did not pause within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ResumeReplay lets a paused replica apply WAL again.
func (c *PGCluster) ResumeReplay() {
	c.t.Helper()
	c.mustBeReplica("ResumeReplay")
	c.Exec("SELECT pg_wal_replay_resume()")
}

// WaitCaughtUp waits until a replica has replayed everything its primary
// had written when it was called.
func (c *PGCluster) WaitCaughtUp(timeout time.Duration) {
	c.t.Helper()
	c.mustBeReplica("WaitCaughtUp")
	target := c.primary.queryString("SELECT pg_current_wal_lsn()::text")
	deadline := time.Now().Add(timeout)
	for c.queryString("SELECT (pg_last_wal_replay_lsn() >= '"+target+"'::pg_lsn)::text") != "true" {
		if time.Now().After(deadline) {
			c.t.Fatalf("replica did not replay up to %s within %v", target, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Promote turns a replica into a primary (pg_promote), as a failover does.
func (c *PGCluster) Promote() {
	c.t.Helper()
	c.mustBeReplica("Promote")
	if got := c.queryString("SELECT pg_promote(true, 30)::text"); got != "true" {
		c.t.Fatalf("promote replica: pg_promote returned %s", got)
	}
}

// Exec runs statements on the postgres database, failing the test on error.
func (c *PGCluster) Exec(sql string, args ...any) {
	c.t.Helper()
	conn := c.connect()
	defer conn.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		c.t.Fatalf("port %d: %s: %v", c.port, sql, err)
	}
}

func (c *PGCluster) queryString(sql string) string {
	c.t.Helper()
	conn := c.connect()
	defer conn.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		c.t.Fatalf("port %d: %s: %v", c.port, sql, err)
	}
	return s
}

func (c *PGCluster) connect() *pgx.Conn {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		c.t.Fatalf("connect to private PostgreSQL on port %d: %v", c.port, err)
	}
	return conn
}

func (c *PGCluster) mustBeReplica(what string) {
	c.t.Helper()
	if c.primary == nil {
		c.t.Fatalf("%s: not a replica", what)
	}
}

// waitAccepting polls until a query succeeds: pg_ctl -w returns when the
// postmaster is up, but a hot standby accepts connections only once it
// reached a consistent state.
func (c *PGCluster) waitAccepting(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, c.URL())
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("private PostgreSQL on port %d does not accept connections: %v\n%s", c.port, err, c.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// destroy stops the server at once and removes its files.
func (c *PGCluster) destroy() {
	if _, err := os.Stat(filepath.Join(c.dataDir(), "postmaster.pid")); err == nil {
		_, _ = c.command("pg_ctl", "stop", "-D", c.dataDir(), "-w", "-t", "30", "-m", "immediate")
	}
	_ = os.RemoveAll(c.dir)
}

func (c *PGCluster) dataDir() string { return filepath.Join(c.dir, "data") }
func (c *PGCluster) logFile() string { return filepath.Join(c.dir, "server.log") }

// logTail is the end of the server log, for failure messages.
func (c *PGCluster) logTail() string {
	b, _ := os.ReadFile(c.logFile())
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (c *PGCluster) appendConf(text string) {
	c.t.Helper()
	f, err := os.OpenFile(filepath.Join(c.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(text)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		c.t.Fatalf("write postgresql.conf: %v", err)
	}
}

func (c *PGCluster) writeFile(name, text string) {
	c.t.Helper()
	if err := os.WriteFile(filepath.Join(c.dataDir(), name), []byte(text), 0o600); err != nil {
		c.t.Fatalf("write %s: %v", name, err)
	}
}

// run runs a PostgreSQL binary as the server's user, failing the test on
// error with the command's output and the server log.
func (c *PGCluster) run(name string, args ...string) {
	c.t.Helper()
	if out, err := c.command(name, args...); err != nil {
		c.t.Fatalf("%s %s: %v\n%s\n--- server log ---\n%s", name, strings.Join(args, " "), err, out, c.logTail())
	}
}

func (c *PGCluster) command(name string, args ...string) ([]byte, error) {
	bin, err := pgBinary(name)
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", pgClusterUser, "--", bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	return cmd.CombinedOutput()
}

// chown gives dir to the server's user when running as root.
func (c *PGCluster) chown(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup(pgClusterUser)
	if err != nil {
		return fmt.Errorf("running as root needs the %s user: %w", pgClusterUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(dir, uid, gid)
}

// pgBinary finds a PostgreSQL binary.
func pgBinary(name string) (string, error) {
	for _, dir := range []string{os.Getenv("ODIN_TEST_PG_BIN"), "/usr/lib/postgresql/15/bin"} {
		if dir == "" {
			continue
		}
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p, nil
		}
	}
	return exec.LookPath(name)
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}
