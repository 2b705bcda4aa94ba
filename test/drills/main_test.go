package drills

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/internal/testenv"
)

func TestMain(m *testing.M) {
	// go-redis prints every failed dial on its own logger; while a drill
	// keeps Redis down that is thousands of lines. The replicas count and
	// log Redis failures themselves (odin_keystore_redis_errors_total).
	redis.SetLogger(quietRedis{})
	code := testenv.Main(m)
	removeBinaries() // the odin binary the SIGTERM drills built
	os.Exit(code)
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
