package service

import (
	"context"
	"log/slog"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
)

// RedisOptions say where Redis is and how its entries are authenticated.
type RedisOptions struct {
	URL     string // empty: no Redis
	Prefix  string
	Timeout time.Duration
	// MACSecret authenticates every entry (at least keystore.MinMACSecret
	// bytes); MACSecretPrevious, when set, is still accepted on read.
	MACSecret, MACSecretPrevious string
}

// openRedis opens Redis; nil without a URL.
func openRedis(opts RedisOptions, m *keystore.Metrics, logger *slog.Logger) (*keystore.Redis, error) {
	if opts.URL == "" {
		return nil, nil
	}
	return keystore.OpenRedis(keystore.RedisOptions{
		URL: opts.URL, Prefix: opts.Prefix, Timeout: opts.Timeout,
		MACSecret: opts.MACSecret, MACSecretPrevious: opts.MACSecretPrevious,
	}, m, logger)
}

// NewBus is this process's invalidation bus, which fences the process
// while it is out of contact; nil without Redis.
func (p *Parts) NewBus() *keystore.Bus {
	if p.Redis == nil {
		return nil
	}
	return p.Redis.NewBus(p.Replica, 0)
}

// Subscribe hands every invalidation on the bus to fn until ctx ends; it
// does nothing without Redis.
func (p *Parts) Subscribe(ctx context.Context, fn func(keystore.Invalidation)) {
	if p.Redis == nil {
		return
	}
	p.Redis.Subscribe(ctx, fn, nil)
}
