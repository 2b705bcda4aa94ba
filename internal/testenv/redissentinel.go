package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMasterName is the name the test sentinels monitor.
const SentinelMasterName = "odin"

// RedisSentinel is a master, one replica and three sentinels (quorum 2) on
// loopback that a test owns, tuned to fail over fast: the master is down
// after 500ms without an answer. Every process is killed when the test
// ends.
type RedisSentinel struct {
	t         testing.TB
	servers   []*redisProc // the master and the replica, in start order
	sentinels []*redisProc
}

// StartRedisSentinel starts the servers and the sentinels and waits until
// every sentinel knows the replica and the other sentinels (before that, a
// failover could not be agreed on).
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	needRedisBinaries(t)
	s := &RedisSentinel{t: t}
	t.Cleanup(func() {
		for _, p := range append(s.sentinels, s.servers...) {
			p.kill()
		}
	})
	root := t.TempDir()
	mkdir := func(name string) string {
		d := filepath.Join(root, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	for i, name := range []string{"master", "replica"} {
		p := &redisProc{t: t, Port: FreePort(t), dir: mkdir(name)}
		p.args = []string{
			"--bind", "127.0.0.1", "--port", strconv.Itoa(p.Port), "--dir", p.dir, "--logfile", p.logFile(),
			"--daemonize", "no", "--protected-mode", "no", "--save", "", "--appendonly", "no",
			"--repl-diskless-sync-delay", "0", // the replica syncs at once, not after 5s
		}
		if i == 1 {
			p.args = append(p.args, "--replicaof", "127.0.0.1", strconv.Itoa(s.servers[0].Port))
		}
		p.start()
		s.servers = append(s.servers, p)
	}
	for i := range 3 {
		p := &redisProc{t: t, Port: FreePort(t), dir: mkdir(fmt.Sprintf("sentinel%d", i))}
		conf := filepath.Join(p.dir, "sentinel.conf") // sentinels rewrite their configuration
		body := strings.Join([]string{
			"bind 127.0.0.1",
			"port " + strconv.Itoa(p.Port),
			"daemonize no",
			"protected-mode no",
			"dir " + p.dir,
			"logfile " + p.logFile(),
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", SentinelMasterName, s.servers[0].Port),
			"sentinel down-after-milliseconds " + SentinelMasterName + " 500",
			"sentinel failover-timeout " + SentinelMasterName + " 2000",
			"sentinel parallel-syncs " + SentinelMasterName + " 1",
			"",
		}, "\n")
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		p.args = []string{conf, "--sentinel"}
		p.start()
		s.sentinels = append(s.sentinels, p)
	}
	waitReplicaInSync(t, s.servers[1], 30*time.Second)
	s.waitSentinelsAgree(30 * time.Second)
	return s
}

// waitReplicaInSync waits until a replica's link to its master is up: a
// replica promoted before its first sync would come up empty.
func waitReplicaInSync(t testing.TB, p *redisProc, within time.Duration) {
	t.Helper()
	c := p.client()
	defer c.Close()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		info, err := c.Info(ctx, "replication").Result()
		cancel()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not in sync after %v; its log:\n%s", p.Addr(), within, p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL is the topology's URL for odin: every sentinel, and the master name.
func (s *RedisSentinel) URL() string {
	u := "redis+sentinel://" + s.sentinels[0].Addr() + "?master_name=" + SentinelMasterName
	for _, p := range s.sentinels[1:] {
		u += "&addr=" + p.Addr()
	}
	return u
}

// MasterAddr is the master's address as the first sentinel that answers
// reports it.
func (s *RedisSentinel) MasterAddr() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var err error
	for _, p := range s.sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: p.Addr(), DialTimeout: time.Second, MaxRetries: -1})
		var addr []string
		addr, err = sc.GetMasterAddrByName(ctx, SentinelMasterName).Result()
		sc.Close()
		if err == nil && len(addr) == 2 {
			return net.JoinHostPort(addr[0], addr[1]), nil
		}
	}
	return "", fmt.Errorf("no sentinel reports the master: %v", err)
}

// KillMaster crashes the current master (SIGKILL) and returns its address.
func (s *RedisSentinel) KillMaster() string {
	s.t.Helper()
	addr, err := s.MasterAddr()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, p := range s.servers {
		if p.Addr() == addr {
			p.kill()
			return addr
		}
	}
	s.t.Fatalf("master %s is none of the test's servers", addr)
	return ""
}

// Restart starts the killed server at addr again, as it was first started:
// an old master comes back as a master with no data, and the sentinels turn
// it into a replica of the new master a few seconds later.
func (s *RedisSentinel) Restart(addr string) {
	s.t.Helper()
	for _, p := range s.servers {
		if p.Addr() == addr && !p.running() {
			p.start()
			return
		}
	}
	s.t.Fatalf("no killed server at %s", addr)
}

// WaitSynced waits until every running server other than the master is
// its replica and in sync (a restarted old master is turned into a replica
// by the sentinels some seconds after it comes back).
func (s *RedisSentinel) WaitSynced(within time.Duration) {
	s.t.Helper()
	master, err := s.MasterAddr()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, p := range s.servers {
		if p.running() && p.Addr() != master {
			waitReplicaInSync(s.t, p, within)
		}
	}
}

// Failover asks a sentinel for a graceful failover (SENTINEL FAILOVER): the
// old master stays up, and clients connected to it stay connected.
func (s *RedisSentinel) Failover() {
	s.t.Helper()
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.sentinels[0].Addr(), DialTimeout: time.Second, MaxRetries: -1})
	defer sc.Close()
	if err := sc.Failover(context.Background(), SentinelMasterName).Err(); err != nil {
		s.t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
}

// WaitFailover waits until every sentinel names a master other than old
// and that server says it is a master; it returns the new master's
// address. (Until every sentinel agrees, a client asking a sentinel that
// has not heard yet still gets the old master.)
func (s *RedisSentinel) WaitFailover(old string, within time.Duration) string {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if addr, err := s.MasterAddr(); err == nil && addr != old && s.isMaster(addr) && s.allName(addr) {
			return addr
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no failover from %s within %v; a sentinel's log:\n%s", old, within, s.sentinels[0].logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// allName reports whether every sentinel names addr as the master.
func (s *RedisSentinel) allName(addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, p := range s.sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: p.Addr(), DialTimeout: time.Second, MaxRetries: -1})
		got, err := sc.GetMasterAddrByName(ctx, SentinelMasterName).Result()
		sc.Close()
		if err != nil || len(got) != 2 || net.JoinHostPort(got[0], got[1]) != addr {
			return false
		}
	}
	return true
}

func (s *RedisSentinel) isMaster(addr string) bool {
	for _, p := range s.servers {
		if p.Addr() != addr || !p.running() {
			continue
		}
		c := p.client()
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		role, err := c.Do(ctx, "ROLE").Slice()
		return err == nil && len(role) > 0 && role[0] == "master"
	}
	return false
}

// waitSentinelsAgree waits until every sentinel sees the replica and the
// two other sentinels.
func (s *RedisSentinel) waitSentinelsAgree(within time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	ctx := context.Background()
	for _, p := range s.sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: p.Addr(), DialTimeout: time.Second, MaxRetries: -1})
		for {
			m, err := sc.Master(ctx, SentinelMasterName).Result()
			if err == nil && m["num-other-sentinels"] == "2" && m["num-slaves"] == "1" {
				break
			}
			if time.Now().After(deadline) {
				sc.Close()
				s.t.Fatalf("sentinel %s does not see the replica and the other sentinels after %v (%v, %v); its log:\n%s",
					p.Addr(), within, m, err, p.logTail())
			}
			time.Sleep(50 * time.Millisecond)
		}
		sc.Close()
	}
}
