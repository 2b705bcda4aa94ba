package authzsvc_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/keystore"
)

// A replica refuses to start with Redis and no MAC secret, or a short one.
func TestRedisNeedsMACSecret(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	for _, secret := range []string{"", "0123456789abcdef0123456789abcde"} { // 31 bytes
		cfg := f.Config()
		cfg.RedisMACSecret = secret
		svc, err := authzsvc.New(context.Background(), cfg, authztest.DiscardLogger())
		if err == nil {
			svc.CloseStores()
			t.Errorf("started with a %d-byte MAC secret; want refused", len(secret))
		} else if want := fmt.Sprint(keystore.ErrMACSecret); err.Error() != want {
			t.Errorf("error %q, want %q", err, want)
		}
	}
}
