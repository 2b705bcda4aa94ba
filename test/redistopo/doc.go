// Package redistopo runs whole `odin authz` replicas against each Redis
// topology odin supports — one server, Sentinel (a master, a replica, three
// sentinels) and Redis Cluster (three masters with a replica each), all real
// redis-server processes on loopback started by internal/testenv — and
// checks, on each, what docs/SCALING.md promises:
//
//   - a key is allowed through the real gRPC Check;
//   - a revoke is final on two replicas the moment the Manager returns
//     (PublishAndWait: every replica acknowledged);
//   - a tier rate limit is shared by two replicas;
//   - a Redis node killed (the one server, the Sentinel master, the Cluster
//     master that holds the bus) leaves every check answering from
//     PostgreSQL, without a 5xx, and once Redis has recovered or failed
//     over, the bus is back and revokes are acknowledged again;
//   - a graceful failover (SENTINEL FAILOVER, CLUSTER FAILOVER), which
//     leaves subscriptions on a live node that no longer receives the
//     revokers' messages, still never lets a replica allow a revoked key.
//
// The package holds tests only; it takes about half a minute.
// ODIN_LONG_TESTS=1 adds a soak that fails over repeatedly under load.
package redistopo
