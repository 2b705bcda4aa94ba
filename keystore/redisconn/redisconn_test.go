package redisconn

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestProtocolDefaultsToRESP2 checks that every topology speaks RESP2
// unless the URL asks for RESP3 (DefaultProtocol). Open dials nothing, so
// no server is needed.
func TestProtocolDefaultsToRESP2(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want int
	}{
		{"redis://127.0.0.1:6379/0", 2},
		{"redis://127.0.0.1:6379/0?protocol=3", 3},
		{"redis+sentinel://127.0.0.1:26379/0?master_name=m", 2},
		{"redis+sentinel://127.0.0.1:26379/0?master_name=m&protocol=3", 3},
		{"redis+cluster://127.0.0.1:7000", 2},
		{"redis+cluster://127.0.0.1:7000?protocol=3", 3},
	} {
		c, err := Open(Options{URL: tc.url})
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		var got int
		switch cl := c.Client().(type) {
		case *redis.Client:
			got = cl.Options().Protocol
		case *redis.ClusterClient:
			got = cl.Options().Protocol
		default:
			t.Fatalf("%s: client %T", tc.url, cl)
		}
		_ = c.Close()
		if got != tc.want {
			t.Errorf("%s: protocol %d, want %d", tc.url, got, tc.want)
		}
	}
}
