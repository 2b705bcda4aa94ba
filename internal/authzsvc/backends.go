package authzsvc

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// openStore opens PostgreSQL, with its read replica and the watermark that
// guards it, unless the configuration gives a store (odin dev).
func (s *Service) openStore(ctx context.Context) error {
	s.store, s.closeStore = s.cfg.Store, func() {}
	if s.store != nil {
		return nil
	}
	opts := pgstore.Options{}
	if s.cfg.DatabaseReadURL != "" {
		s.watermark = keystore.NewWatermark(keystore.WatermarkOptions{Fenced: s.fenced, Registerer: s.registry, Logger: s.log})
		opts.ReadURL, opts.Watermark = s.cfg.DatabaseReadURL, s.watermark
	}
	pg, err := pgstore.Open(ctx, s.cfg.DatabaseURL, opts)
	if err != nil {
		return err
	}
	s.store, s.closeStore = pg, pg.Close
	pg.ReportSchema(ctx, s.log)
	if pg.HasReplica() {
		s.pingReplica = pg.PingReplica
	}
	return nil
}

// openBus opens Redis and the replica's end of the invalidation bus, when
// Redis is configured.
func (s *Service) openBus(replica string, km *keystore.Metrics) error {
	if s.cfg.RedisURL == "" {
		return nil
	}
	var err error
	s.redis, err = keystore.OpenRedis(keystore.RedisOptions{
		URL: s.cfg.RedisURL, Prefix: s.cfg.RedisPrefix, Timeout: s.cfg.RedisTimeout,
		MACSecret: s.cfg.RedisMACSecret, MACSecretPrevious: s.cfg.RedisMACSecretPrevious,
	}, km, s.log)
	if err != nil {
		return err
	}
	s.bus = s.redis.NewBus(replica, 0)
	s.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "odin_keystore_bus_fenced",
		Help: "1 while this replica is fenced (out of contact with the invalidation bus: it answers no key from its LRU), 0 otherwise.",
	}, func() float64 {
		if s.bus.Fenced(time.Now()) {
			return 1
		}
		return 0
	}))
	return nil
}

// buildLimiter builds the tier rate limiter, shared across replicas through
// Redis when there is one.
func (s *Service) buildLimiter() (*ratelimit.Limiter, error) {
	if s.cfg.DisableRateLimit {
		return nil, nil
	}
	switch s.cfg.RateLimitBy {
	case "", "credential", "org":
	default:
		return nil, fmt.Errorf("rate limit key %q: want credential or org", s.cfg.RateLimitBy)
	}
	opts := s.cfg.RateLimit
	var client redis.UniversalClient
	if s.redis != nil {
		client = s.redis.Conn().Client() // the connection the key tier and the bus use
		if opts.Prefix == "" {
			prefix := s.cfg.RedisPrefix
			if prefix == "" {
				prefix = "odin:"
			}
			opts.Prefix = prefix + "ratelimit:"
		}
	}
	return ratelimit.New(client, opts, s.log, s.registry)
}
