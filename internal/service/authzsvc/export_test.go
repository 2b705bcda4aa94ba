package authzsvc

import (
	"context"
	"time"

	"github.com/odin-scan/odin-authz/internal/telemetry"
	"github.com/odin-scan/odin-authz/keystore"
)

// What the external tests of the assembly (package authzsvc_test) see of a
// Service's insides.

// EvictFromLRU applies inv to this replica's key cache only.
func (s *Service) EvictFromLRU(inv keystore.Invalidation) { s.cache.Invalidate(inv) }

// SyncRevoked re-reads the revoked sessions from the store.
func (s *Service) SyncRevoked(ctx context.Context) error { return s.parts.Revoked.Sync(ctx) }

// Fenced reports whether the bus fences this replica.
func (s *Service) Fenced(now time.Time) bool { return s.bus.Fenced(now) }

// Tracing is the replica's tracing provider.
func (s *Service) Tracing() *telemetry.Provider { return s.parts.Tracing }

// CloseStores closes what New opened, for a Service that is never served.
func (s *Service) CloseStores() { s.parts.Close() }
