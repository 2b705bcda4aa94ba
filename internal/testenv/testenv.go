// Package testenv gives tests real PostgreSQL and Redis, isolated per test:
// a fresh database cloned from a migrated template, and a Redis key prefix
// of its own. A test that needs a server skips with a loud message when it
// is unreachable, except under CI=true, where it fails.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// Defaults match the project's machines; override with the variables.
const (
	defaultPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	defaultRedis    = "redis://127.0.0.1:6379/0"
)

// PostgresAdminURL is the server tests create their databases on
// (ODIN_TEST_DATABASE_URL).
func PostgresAdminURL() string {
	if v := os.Getenv("ODIN_TEST_DATABASE_URL"); v != "" {
		return v
	}
	return defaultPostgres
}

// RedisServerURL is the Redis tests use (ODIN_TEST_REDIS_URL).
func RedisServerURL() string {
	if v := os.Getenv("ODIN_TEST_REDIS_URL"); v != "" {
		return v
	}
	return defaultRedis
}

// unavailable skips, or fails under CI=true, because a server is missing.
func unavailable(t testing.TB, what string, err error) {
	t.Helper()
	Unavailable(t, fmt.Sprintf("%s is unreachable: %v", what, err))
}

// Unavailable skips the test, or fails it under CI=true, because something
// it needs (a server, a proxy binary) is missing; what says what and how to
// get it. Main prints one summary line per reason after the package's tests,
// so that skips are seen without -v.
func Unavailable(t testing.TB, what string) {
	t.Helper()
	msg := fmt.Sprintf("\n*** %s\n*** this test needs it (see CONTRIBUTING.md) — skipping", what)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " is not allowed under CI=true")
	}
	skips.add(what)
	t.Skip(msg)
}

// skips counts the tests skipped by Unavailable, per reason.
var skips skipLog

type skipLog struct {
	mu      sync.Mutex
	reasons []string
	count   map[string]int
}

func (l *skipLog) add(what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count == nil {
		l.count = map[string]int{}
	}
	if l.count[what] == 0 {
		l.reasons = append(l.reasons, what)
	}
	l.count[what]++
}

// summary is one loud line per reason, or "" when nothing was skipped.
func (l *skipLog) summary(pkg string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, r := range l.reasons {
		fmt.Fprintf(&b, "*** %s: %d test(s) SKIPPED: %s\n", pkg, l.count[r], strings.ReplaceAll(r, "\n", " "))
	}
	return b.String()
}

// reportSkips prints the summary on stderr (shown with -v or on failure) and
// on the terminal: go test keeps a passing package's output to itself, so a
// run of the README's test command would otherwise show "ok" for a package
// whose main tests all skipped. Without a terminal (CI) the line is in the
// output only; under CI=true a skip is a failure anyway.
func reportSkips() {
	wd, _ := os.Getwd()
	pkg := wd
	for dir := wd; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if rel, err := filepath.Rel(dir, wd); err == nil {
				pkg = "./" + filepath.ToSlash(rel)
			}
			break
		}
	}
	msg := skips.summary(pkg)
	if msg == "" {
		return
	}
	fmt.Fprint(os.Stderr, msg)
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		fmt.Fprint(tty, msg)
		tty.Close()
	}
}

// RandomSuffix is a short random lower-case hex string for names.
func RandomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var template struct {
	once sync.Once
	name string
	err  error
}

// withDatabase returns the admin URL with its database replaced.
func withDatabase(admin, db string) string {
	u, err := url.Parse(admin)
	if err != nil {
		panic(fmt.Sprintf("ODIN_TEST_DATABASE_URL: %v", err))
	}
	u.Path = "/" + db
	return u.String()
}

func adminConn(ctx context.Context) (*pgx.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return pgx.Connect(cctx, PostgresAdminURL())
}

// makeTemplate creates and migrates this process's template database.
func makeTemplate(ctx context.Context) (string, error) {
	conn, err := adminConn(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	sweepOrphans(ctx, conn)
	name := "odin_tpl_" + ownedName()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create template: %w", err)
	}
	store, err := pgstore.Open(ctx, withDatabase(PostgresAdminURL(), name), pgstore.Options{MaxConns: 2})
	if err != nil {
		return "", err
	}
	defer store.Close()
	if err := store.Migrate(ctx, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		return "", err
	}
	return name, nil
}

// Postgres returns the URL of a fresh, migrated database of this test's own,
// dropped when the test ends.
func Postgres(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	template.once.Do(func() { template.name, template.err = makeTemplate(ctx) })
	if template.err != nil {
		unavailable(t, "PostgreSQL ("+redactURL(PostgresAdminURL())+")", template.err)
	}
	return newDatabase(t, template.name)
}

// PostgresEmpty is Postgres without the schema: a fresh database on which no
// migration ran, as a new deployment finds it.
func PostgresEmpty(t testing.TB) string {
	t.Helper()
	return newDatabase(t, "template0")
}

// newDatabase creates a database from template, dropped when t ends.
func newDatabase(t testing.TB, template string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := adminConn(ctx)
	if err != nil {
		unavailable(t, "PostgreSQL", err)
	}
	defer conn.Close(ctx)
	name := "odin_t_" + ownedName()
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, template)); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() { dropDatabase(name) })
	return withDatabase(PostgresAdminURL(), name)
}

// ownedName is a database name suffix carrying this process's id, so that
// the databases of a process that died before its cleanup (a fuzz worker
// killed at the end of -fuzztime, an interrupted run) can be recognised
// and dropped by a later one.
func ownedName() string { return strconv.Itoa(os.Getpid()) + "_" + RandomSuffix() }

// orphanName matches the databases ownedName names, capturing the pid.
var orphanName = regexp.MustCompile(`^odin_(?:tpl|t)_([0-9]+)_[0-9a-f]{12}$`)

// sweepOrphans drops the test databases whose creating process is gone and
// to which nobody is connected. It only runs when PostgreSQL is on this
// machine's loopback, where the pids in the names are this machine's.
func sweepOrphans(ctx context.Context, conn *pgx.Conn) {
	if u, err := url.Parse(PostgresAdminURL()); err != nil || !isLoopback(u.Hostname()) {
		return
	}
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database d
		WHERE datname LIKE 'odin\_t%' AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datid = d.oid)`)
	if err != nil {
		return
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, name := range names {
		m := orphanName.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		if _, err := os.Stat("/proc/" + m[1]); err == nil {
			continue // its process still runs
		}
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	}
}

func isLoopback(host string) bool {
	if host == "localhost" || host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func dropDatabase(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := adminConn(ctx)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
}

// Main runs a package's tests and then drops its template database. Call it
// from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	reportSkips()
	if template.name != "" {
		dropDatabase(template.name)
	}
	return code
}

// RedisMACSecret is the secret that authenticates Redis entries in tests
// (keystore.RedisOptions.MACSecret, ODIN_REDIS_MAC_SECRET): every process of
// one test must share it. A test value, never a production one.
const RedisMACSecret = "odin-test-redis-mac-secret-not-for-production"

// Redis returns the shared Redis URL and a key prefix of this test's own;
// keys under the prefix are deleted when the test ends.
func Redis(t testing.TB) (redisURL, prefix string) {
	t.Helper()
	redisURL = RedisServerURL()
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("ODIN_TEST_REDIS_URL: %v", err)
	}
	c := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		unavailable(t, "Redis ("+redisURL+")", err)
	}
	prefix = "odintest:" + RandomSuffix() + ":"
	t.Cleanup(func() {
		defer c.Close()
		ctx := context.Background()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return redisURL, prefix
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "an unparsable URL"
	}
	return strings.Replace(u.Redacted(), "xxxxx", "***", 1)
}

// OpenStore opens a pgstore.Store on the database at dbURL, closed when the
// test ends.
func OpenStore(t testing.TB, dbURL string, opts pgstore.Options) *pgstore.Store {
	t.Helper()
	store, err := pgstore.Open(context.Background(), dbURL, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return store
}
