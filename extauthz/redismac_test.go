package extauthz_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
)

// rawRedis is what an attacker who can write Redis, but holds no secret,
// has: a plain client.
func rawRedis(t *testing.T, f *authztest.Fixture) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(f.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

func keyName(f *authztest.Fixture, plaintext string) string {
	return f.Prefix + "key:" + keystore.HashKey(plaintext).String()
}

func sessionName(f *authztest.Fixture, token string) string {
	h := sha256.Sum256([]byte(token))
	return f.Prefix + "jwt:" + hex.EncodeToString(h[:])
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Whoever can write Redis but does not hold the MAC secret cannot make a
// string an identity, reuse an entry under another key's name, deny a real
// key by marking it unknown, or log a session out: every such entry is
// treated as absent (PostgreSQL or the token's signature decides) and
// counted.
func TestForgedRedisEntriesAreNotTrusted(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	is := authztest.NewIssuer(t)
	rc := rawRedis(t, f)
	ctx := context.Background()
	now := time.Now()
	until, written := now.Add(time.Hour).UnixNano(), now.UnixNano()
	set := func(name string, val []byte) {
		t.Helper()
		if err := rc.Set(ctx, name, val, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	auth := func(cred string) map[string]string { return map[string]string{"authorization": "Bearer " + cred} }

	// A key record made up for a well-formed key that does not exist.
	forgedKey, _ := keystore.GenerateKey()
	set(keyName(f, forgedKey), mustJSON(t, map[string]any{
		"k": map[string]any{"id": "key_forged", "user_id": "user_admin", "name": "x", "hint": "x",
			"scopes": []string{"scans:read", "scans:write"}, "tier": "enterprise", "created_at": now},
		"u": until, "w": written,
	}))

	// A real key's record, authenticated, copied under another key's name.
	realKey, _ := f.CreateKey(t, keystore.NewKey{UserID: "user_alice", Scopes: []string{"scans:read", "scans:write"}})
	sealed, err := rc.Get(ctx, keyName(f, realKey)).Bytes()
	if err != nil {
		t.Fatalf("the manager wrote no record for a new key: %v", err)
	}
	copiedKey, _ := keystore.GenerateKey()
	set(keyName(f, copiedKey), sealed)

	// "Unknown key" entries put over a real key's record: one made up, one
	// a real (authenticated) negative entry of another key, copied.
	deniedKey, _ := f.CreateKey(t, keystore.NewKey{UserID: "user_bob"})
	deniedKey2, _ := f.CreateKey(t, keystore.NewKey{UserID: "user_bob"})
	set(keyName(f, deniedKey), mustJSON(t, map[string]any{"u": until, "w": written}))
	unknown, _ := keystore.GenerateKey()
	// The key filter would refuse made-up keys before Redis is read: these
	// replicas run without it, so that the MAC alone is what refuses.
	noFilter := func(c authzsvc.Config) authzsvc.Config { c.NoKeyFilter = true; return c }
	probe := authztest.StartReplica(t, noFilter(f.Config())) // writes the unknown key's negative entry
	if got := authztest.HTTPStatus(probe.Check(t, auth(unknown))); got != 401 {
		t.Fatalf("unknown key: %d", got)
	}
	probe.Stop()
	negative, err := rc.Get(ctx, keyName(f, unknown)).Bytes()
	if err != nil {
		t.Fatalf("no negative entry written for an unknown key: %v", err)
	}
	set(keyName(f, deniedKey2), negative)

	// A verified session made up for a token that does not verify, and a
	// real one copied under another token's name.
	forgedToken := noneToken(t, is.Token(t, devissuer.Claims{Subject: "user_mallory", SessionID: "sess_mallory", AuthorizedParty: "https://app.odin.test"}))
	set(sessionName(f, forgedToken), mustJSON(t, map[string]any{
		"identity": map[string]any{"Method": "jwt", "Subject": "user_admin", "SessionID": "sess_x", "Scopes": []string{"read", "write"}, "Tier": "enterprise"},
		"deadline": until, "until": until,
	}))
	carol := is.Token(t, devissuer.Claims{Subject: "user_carol", SessionID: "sess_carol", AuthorizedParty: "https://app.odin.test"})
	first := authztest.StartReplica(t, authztest.JWTConfig(f, is)) // caches carol's verified session in Redis
	if got := authztest.HTTPStatus(first.Check(t, auth(carol))); got != 200 {
		t.Fatalf("carol's token: %d", got)
	}
	first.Stop()
	carolEntry, err := rc.Get(ctx, sessionName(f, carol)).Bytes()
	if err != nil {
		t.Fatalf("no session entry written for a verified token: %v", err)
	}
	copiedToken := noneToken(t, is.Token(t, devissuer.Claims{Subject: "user_mallory", SessionID: "sess_mallory2", AuthorizedParty: "https://app.odin.test"}))
	set(sessionName(f, copiedToken), carolEntry)

	// A revoked-session marker made up for a session nobody logged out.
	set(f.Prefix+"rsid:sess_dave", []byte(now.Format(time.RFC3339Nano)))
	dave := is.Token(t, devissuer.Claims{Subject: "user_dave", SessionID: "sess_dave", AuthorizedParty: "https://app.odin.test"})

	r := authztest.StartReplica(t, noFilter(authztest.JWTConfig(f, is)))
	for _, tc := range []struct {
		name string
		cred string
		want int
	}{
		{"forged key record", forgedKey, 401},
		{"real key record copied under another key's name", copiedKey, 401},
		{"forged unknown-key entry over a real key", deniedKey, 200},
		{"real unknown-key entry copied over a real key", deniedKey2, 200},
		{"forged verified-session record", forgedToken, 401},
		{"real session record copied under another token's name", copiedToken, 401},
		{"forged revoked-session marker", dave, 200},
		{"the real key, whose record is genuine", realKey, 200},
		{"the real token, whose record is genuine", carol, 200},
	} {
		resp := r.Check(t, auth(tc.cred))
		if got := authztest.HTTPStatus(resp); got != tc.want {
			t.Errorf("%s: status %d, want %d (identity %v)", tc.name, got, tc.want, authztest.HeaderMap(resp.GetOkResponse().GetHeaders()))
		}
	}
	if got := r.Counter(t, "odin_keystore_redis_errors_total", map[string]string{"op": "mac"}); got < 7 {
		t.Errorf(`odin_keystore_redis_errors_total{op="mac"} = %v, want at least 7 (one per forged or copied entry)`, got)
	}
	if got := r.Counter(t, "odin_keystore_lookups_total", map[string]string{"tier": "redis"}); got != 1 {
		t.Errorf("key lookups answered by Redis = %v, want 1 (the real key only)", got)
	}
	if got := r.Counter(t, "odin_authz_session_lookups_total", map[string]string{"tier": "redis"}); got != 1 {
		t.Errorf("session lookups answered by Redis = %v, want 1 (the real token only)", got)
	}
}

// A replica whose secret differs from the others' (a rotation half done, a
// typo) finds none of their entries valid: it reads PostgreSQL and verifies
// tokens itself, and denies nothing for it. A replica given the others'
// secret as the previous one keeps using their entries.
func TestWrongMACSecretReadsPostgres(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	is := authztest.NewIssuer(t)
	key, _ := f.CreateKey(t, keystore.NewKey{UserID: "user_alice"}) // its record is in Redis
	tok := is.Token(t, devissuer.Claims{Subject: "user_carol", SessionID: "sess_carol", AuthorizedParty: "https://app.odin.test"})
	auth := func(cred string) map[string]string { return map[string]string{"authorization": "Bearer " + cred} }
	right := authztest.StartReplica(t, authztest.JWTConfig(f, is))
	if got := authztest.HTTPStatus(right.Check(t, auth(tok))); got != 200 { // caches the session in Redis
		t.Fatalf("token: %d", got)
	}

	const newSecret = "a-new-secret-being-rolled-out-0123456789"
	wrongCfg := authztest.JWTConfig(f, is)
	wrongCfg.RedisMACSecret = newSecret
	wrong := authztest.StartReplica(t, wrongCfg)
	rotatingCfg := authztest.JWTConfig(f, is)
	rotatingCfg.RedisMACSecret, rotatingCfg.RedisMACSecretPrevious = newSecret, testenv.RedisMACSecret
	rotating := authztest.StartReplica(t, rotatingCfg)

	for _, tc := range []struct {
		name                    string
		r                       *authztest.Replica
		wantStore, wantVerified float64
	}{
		{"wrong secret", wrong, 1, 1},
		{"new secret, old one previous", rotating, 0, 0},
	} {
		for _, cred := range []string{key, tok} {
			if got := authztest.HTTPStatus(tc.r.Check(t, auth(cred))); got != 200 {
				t.Errorf("%s: status %d, want 200", tc.name, got)
			}
		}
		if got := tc.r.Counter(t, "odin_keystore_lookups_total", map[string]string{"tier": "store"}); got != tc.wantStore {
			t.Errorf("%s: key lookups sent to PostgreSQL = %v, want %v", tc.name, got, tc.wantStore)
		}
		if got := tc.r.Counter(t, "odin_authz_session_lookups_total", map[string]string{"tier": "verified"}); got != tc.wantVerified {
			t.Errorf("%s: tokens verified = %v, want %v", tc.name, got, tc.wantVerified)
		}
		if got, want := tc.r.Counter(t, "odin_keystore_redis_errors_total", map[string]string{"op": "mac"}), 2*tc.wantStore; got != want {
			t.Errorf(`%s: odin_keystore_redis_errors_total{op="mac"} = %v, want %v`, tc.name, got, want)
		}
	}
}
