package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisProc is one redis-server (or sentinel) process of a test's topology,
// with its own port, directory and log file.
type redisProc struct {
	t    testing.TB
	Port int
	dir  string
	args []string // after the binary; the port and dir are in them
	cmd  *exec.Cmd
}

// Addr is the process's host:port.
func (p *redisProc) Addr() string { return "127.0.0.1:" + strconv.Itoa(p.Port) }

func (p *redisProc) logFile() string { return filepath.Join(p.dir, "redis.log") }

// start runs the process and waits until it answers PING.
func (p *redisProc) start() {
	p.t.Helper()
	p.cmd = exec.Command("redis-server", p.args...)
	p.cmd.Dir = p.dir
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start redis-server on port %d: %v", p.Port, err)
	}
	c := redis.NewClient(&redis.Options{Addr: p.Addr(), DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			p.t.Fatalf("redis-server on port %d did not answer; its log:\n%s", p.Port, p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the process as a crash would (SIGKILL) and waits for it.
func (p *redisProc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}

func (p *redisProc) running() bool { return p.cmd != nil }

// logTail is the end of the process's log, for failure messages.
func (p *redisProc) logTail() string {
	b, err := os.ReadFile(p.logFile())
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// client is a plain client to this one process.
func (p *redisProc) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: p.Addr(), DialTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1})
}

// needRedisBinaries skips (fails under CI=true) without redis-server and
// redis-cli.
func needRedisBinaries(t testing.TB) {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			unavailable(t, bin+" (binary, from the redis-server / redis-tools packages)", err)
		}
	}
}

// RedisClusterOptions shape a test cluster. Zero values take the defaults.
type RedisClusterOptions struct {
	// Masters is the number of masters, default 3 (the fewest Redis allows).
	Masters int
	// Replicas is the number of replicas of each master, default 0. With
	// replicas, a killed master fails over to one of them.
	Replicas int
	// NodeTimeout is cluster-node-timeout: how long a node may be
	// unreachable before it is failed over, default 1s.
	NodeTimeout time.Duration
}

// RedisCluster is a Redis Cluster of redis-server processes on loopback that
// a test owns: created with redis-cli --cluster create, without persistence,
// with cluster-require-full-coverage off (the slots of a dead master fail,
// the others keep working). Every process is killed when the test ends.
type RedisCluster struct {
	t     testing.TB
	Nodes []*redisProc
}

// StartRedisCluster starts the nodes, creates the cluster and waits until
// every node says it is ok.
func StartRedisCluster(t testing.TB, opts RedisClusterOptions) *RedisCluster {
	t.Helper()
	needRedisBinaries(t)
	if opts.Masters <= 0 {
		opts.Masters = 3
	}
	if opts.NodeTimeout <= 0 {
		opts.NodeTimeout = time.Second
	}
	c := &RedisCluster{t: t}
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			n.kill()
		}
	})
	root := t.TempDir()
	for i := range opts.Masters * (1 + opts.Replicas) {
		n := &redisProc{t: t, Port: FreePort(t), dir: filepath.Join(root, fmt.Sprintf("node%d", i))}
		if err := os.Mkdir(n.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		n.args = []string{
			"--bind", "127.0.0.1", "--port", strconv.Itoa(n.Port), "--dir", n.dir, "--logfile", n.logFile(),
			"--daemonize", "no", "--protected-mode", "no", "--save", "", "--appendonly", "no",
			"--repl-diskless-sync-delay", "0", // replicas sync at once, not after 5s
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			// Its own free port: port+10000, the default, may be taken or past 65535.
			"--cluster-port", strconv.Itoa(FreePort(t)),
			"--cluster-node-timeout", strconv.FormatInt(opts.NodeTimeout.Milliseconds(), 10),
			"--cluster-require-full-coverage", "no",
			// A replica may always take over, however stale: it is a cache.
			"--cluster-replica-validity-factor", "0",
		}
		n.start()
		c.Nodes = append(c.Nodes, n)
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.Nodes {
		args = append(args, n.Addr())
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(opts.Replicas), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy(30 * time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for !c.replicated(opts.Replicas) { // so that a killed master can fail over
		if time.Now().After(deadline) {
			t.Fatalf("redis cluster: masters without their %d replicas after 30s", opts.Replicas)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.waitReplicasInSync(30 * time.Second)
	return c
}

// waitReplicasInSync waits until every live replica's link to its master
// is up, as after a restart: a replica promoted before it synced would
// take over its slots empty.
func (c *RedisCluster) waitReplicasInSync(within time.Duration) {
	c.t.Helper()
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		cl := n.client()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		info, err := cl.Info(ctx, "replication").Result()
		cancel()
		cl.Close()
		if err != nil {
			c.t.Fatalf("info replication on %s: %v", n.Addr(), err)
		}
		if strings.Contains(info, "role:slave") {
			waitReplicaInSync(c.t, n, within)
		}
	}
}

// replicated reports whether every slot range lists n replicas.
func (c *RedisCluster) replicated(n int) bool {
	slots, err := c.slots()
	if err != nil {
		return false
	}
	for _, s := range slots {
		if len(s.replicas) < n {
			return false
		}
	}
	return true
}

// URL is the cluster's URL for odin (every node a seed).
func (c *RedisCluster) URL() string {
	u := "redis+cluster://" + c.Nodes[0].Addr()
	for i, n := range c.Nodes[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + n.Addr()
	}
	return u
}

// Kill crashes node i (SIGKILL).
func (c *RedisCluster) Kill(i int) { c.Nodes[i].kill() }

// Restart starts node i again with its cluster configuration (nodes.conf),
// so it rejoins as the node it was (a master that was failed over rejoins
// as a replica); its data is gone. It waits until the cluster is healthy
// and every replica in sync.
func (c *RedisCluster) Restart(i int) {
	c.t.Helper()
	c.Nodes[i].start()
	c.WaitHealthy(30 * time.Second)
	c.waitReplicasInSync(30 * time.Second)
}

// Failover makes a replica of node i's slots take them over gracefully
// (CLUSTER FAILOVER on the replica): the old master stays up as a replica.
// It returns the index of the new master.
func (c *RedisCluster) Failover(i int) int {
	c.t.Helper()
	slots := c.agreedSlots()
	for _, s := range slots {
		if c.index(s.master) != i {
			continue
		}
		for _, r := range s.replicas {
			j := c.index(r)
			if j < 0 || !c.Nodes[j].running() {
				continue
			}
			cl := c.Nodes[j].client()
			defer cl.Close()
			if err := cl.ClusterFailover(context.Background()).Err(); err != nil {
				c.t.Fatalf("CLUSTER FAILOVER on %s: %v", r, err)
			}
			return j
		}
	}
	c.t.Fatalf("node %d is not a master with a live replica", i)
	return -1
}

// SlotOwner returns the index of the node that every live node says is
// the master of key's slot.
func (c *RedisCluster) SlotOwner(key string) int {
	c.t.Helper()
	slots := c.agreedSlots()
	slot, err := c.keySlot(key)
	if err != nil {
		c.t.Fatalf("cluster keyslot: %v", err)
	}
	for _, s := range slots {
		if slot >= s.start && slot <= s.end {
			if i := c.index(s.master); i >= 0 {
				return i
			}
		}
	}
	c.t.Fatalf("no master for slot %d", slot)
	return -1
}

// WaitHealthy waits until every live node says cluster_state:ok and every
// slot has a live master, as after a failover.
func (c *RedisCluster) WaitHealthy(within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var why string
	for {
		if why = c.unhealthy(); why == "" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("redis cluster not healthy after %v: %s", within, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unhealthy says what is wrong, or "".
func (c *RedisCluster) unhealthy() string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	live := 0
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		live++
		cl := n.client()
		info, err := cl.ClusterInfo(ctx).Result()
		cl.Close()
		if err != nil {
			return fmt.Sprintf("node %s: %v", n.Addr(), err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Sprintf("node %s: state not ok", n.Addr())
		}
	}
	slots, err := c.slots()
	if err != nil {
		return err.Error()
	}
	var covered int64
	for _, s := range slots {
		if i := c.index(s.master); i < 0 || !c.Nodes[i].running() {
			return fmt.Sprintf("slots %d-%d: master %q is down", s.start, s.end, s.master)
		}
		covered += s.end - s.start + 1
	}
	if covered != 16384 {
		return fmt.Sprintf("%d of 16384 slots assigned", covered)
	}
	return ""
}

// slotRange is a range of slots with its master and its online replicas
// (host:port), as a live node sees them.
type slotRange struct {
	start, end int64
	master     string
	replicas   []string
}

// agreedSlots is slots once the live nodes agree on them, asking again for
// up to 10 s; it fails the test if they do not.
func (c *RedisCluster) agreedSlots() []slotRange {
	c.t.Helper()
	slots, err := c.slots()
	for deadline := time.Now().Add(10 * time.Second); err != nil && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		slots, err = c.slots()
	}
	if err != nil {
		c.t.Fatalf("cluster slots: %v", err)
	}
	return slots
}

// slots asks every live node for the slot map (CLUSTER SHARDS) and returns
// it when they agree on the master of every range: a node restarted a
// moment ago may still think it serves the slots it lost.
func (c *RedisCluster) slots() ([]slotRange, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var agreed []slotRange
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		cl := n.client()
		shards, err := cl.ClusterShards(ctx).Result()
		cl.Close()
		if err != nil {
			return nil, fmt.Errorf("cluster shards on %s: %w", n.Addr(), err)
		}
		var ranges []slotRange
		for _, sh := range shards {
			var master string
			var replicas []string
			for _, node := range sh.Nodes {
				addr := net.JoinHostPort(node.IP, strconv.FormatInt(node.Port, 10))
				switch {
				case node.Role == "master" && (master == "" || node.Health == "online"):
					master = addr // a failed master until its replica takes over
				case node.Role != "master" && node.Health == "online":
					replicas = append(replicas, addr)
				}
			}
			for _, r := range sh.Slots {
				ranges = append(ranges, slotRange{start: r.Start, end: r.End, master: master, replicas: replicas})
			}
		}
		sort.Slice(ranges, func(i, j int) bool { return ranges[i].start < ranges[j].start })
		if agreed == nil {
			agreed = ranges
			continue
		}
		if len(ranges) != len(agreed) {
			return nil, fmt.Errorf("nodes disagree on the slot map")
		}
		for i := range ranges {
			if ranges[i].start != agreed[i].start || ranges[i].end != agreed[i].end || ranges[i].master != agreed[i].master {
				return nil, fmt.Errorf("nodes disagree on the master of slots %d-%d", ranges[i].start, ranges[i].end)
			}
		}
	}
	if agreed == nil {
		return nil, fmt.Errorf("no live node")
	}
	return agreed, nil
}

func (c *RedisCluster) index(addr string) int {
	for i, n := range c.Nodes {
		if n.Addr() == addr {
			return i
		}
	}
	return -1
}

// keySlot asks a live node for key's slot (CLUSTER KEYSLOT).
func (c *RedisCluster) keySlot(key string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, n := range c.Nodes {
		if n.running() {
			cl := n.client()
			defer cl.Close()
			return cl.ClusterKeySlot(ctx, key).Result()
		}
	}
	return 0, fmt.Errorf("no live node")
}
