package redistopo

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/redisconn"
)

// The URL's scheme picks the topology; bad URLs are refused with an error
// that names the problem but never a password.
func TestRedisURLs(t *testing.T) {
	open := func(url string) (*keystore.Redis, error) {
		return keystore.OpenRedis(keystore.RedisOptions{URL: url, MACSecret: testenv.RedisMACSecret}, keystore.NewMetrics(nil), slog.New(slog.DiscardHandler))
	}
	for url, want := range map[string]string{
		"redis://:s3cret@127.0.0.1:6379/0": redisconn.TopologySingle,
		"rediss://127.0.0.1:6380":          redisconn.TopologySingle,
		"unix:///run/redis.sock?db=2":      redisconn.TopologySingle,
		"redis+sentinel://127.0.0.1:26379/1?master_name=odin&addr=127.0.0.1:26380&password=s3cret":    redisconn.TopologySentinel,
		"REDISS+SENTINEL://:s3cret@127.0.0.1:26379?master_name=odin":                                  redisconn.TopologySentinel,
		"redis+cluster://:s3cret@127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002":              redisconn.TopologyCluster,
		"rediss+cluster://127.0.0.1:7000":                                                             redisconn.TopologyCluster,
		"redis+cluster://user:s3cret@127.0.0.1:7000?addr=127.0.0.1:7001&max_redirects=5&pool_size=20": redisconn.TopologyCluster,
	} {
		r, err := open(url)
		if err != nil {
			t.Errorf("%s: %v", url, err)
			continue
		}
		if got := r.Conn().Topology(); got != want {
			t.Errorf("%s: topology %q, want %q", url, got, want)
		}
		r.Close()
	}
	for url, says := range map[string]string{
		"":                               "want redis://",
		"127.0.0.1:6379":                 "want redis://",
		"redis:s3cret@h:6379://x":        "want redis://",
		"http://127.0.0.1:6379":          `scheme "http"`,
		"redis+sharded://127.0.0.1:6379": `scheme "redis+sharded"`,
		"unix+cluster:///run/redis.sock": `scheme "unix+cluster"`,
		"redis+sentinel://:s3cret@127.0.0.1:26379":                                 "master_name",
		"redis+sentinel://h:26379?master_name=o&replica_only=true&password=s3cret": "reads must go to the master",
		"redis+sentinel://h:26379?master_name=o&route_randomly=true":               "reads must go to the master",
		"redis+cluster://:s3cret@h:7000?read_only=true":                            "reads must go to the masters",
		"redis+cluster://:s3cret@h:7000?route_by_latency=true":                     "reads must go to the masters",
		"redis+cluster://:s3cret@h:7000?no_such_option=1":                          "unexpected option: no_such_option",
		"redis+cluster://:s3cret@h:7000?addr=nohostport":                           "addr",
		"redis://:s3cret@h:6379/notadb":                                            "invalid",
		"redis://:s3%zzcret@h:6379":                                                "not a URL",
		"redis+sentinel://h:26379?master_name=o&password=s3cret&db=s3cret":         "invalid Redis URL",
	} {
		_, err := open(url)
		if err == nil {
			t.Errorf("%q: accepted", url)
			continue
		}
		if !strings.Contains(err.Error(), says) {
			t.Errorf("%q: error %q does not say %q", url, err, says)
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "s3%zzcret") {
			t.Errorf("%q: error %q shows the password", url, err)
		}
	}
}
