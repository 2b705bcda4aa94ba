package loadtest

import "slices"

// Server profiles: how the odin server a scenario runs against is started.
const (
	// profileMain: default LRU (100,000 entries), Redis, JWKS.
	profileMain = "main"
	// profileCold: a tiny LRU and no Redis, so every key check that is not
	// in the last few hundred reaches PostgreSQL.
	profileCold = "cold"
	// profileColdRedis: a tiny LRU in front of Redis.
	profileColdRedis = "cold-redis"
)

// Every seeded key and minted token has the tier loadTier, which the
// servers are started with a limit far above any load this harness makes
// (ODIN_RATE_LIMIT_TIERS): the rate limiter runs on every check, as in
// production, but never refuses one.
const (
	loadTier      = "enterprise"
	loadTierLimit = loadTier + "=100000/s:1000000"
)

// burstProbes is how many burst probes run per profile; each uses one of
// the last keys of the table, which no other scenario warms.
const burstProbes = 3

// scenario is one kind of load. Each run of it (a concurrency level and a
// round) has an index ri; the baseline and odin runs of a round share it and
// so send the same credentials.
type scenario struct {
	name, about string
	http        bool
	profile     string
	needsRedis  bool
	needsJWT    bool
	// cred returns the credential of request i of run ri.
	cred func(ri int, i int64) credential
	// warm lists credentials odin must have seen just before each run,
	// and the decision it must give them.
	warm       func(ri int) []credential
	warmExpect string // "allow", "deny" or "" (mixed: not checked)
	// requestCap lowers the run's request bound (first-sight tokens).
	requestCap int64
	// proxy: the HTTP load goes to Config.ProxyURL, with no baseline.
	proxy bool
	// fresh: every request has a credential of its own (cold keys,
	// first-sight tokens); otherwise a small set repeats.
	fresh bool
}

// scenarioNames lists every scenario in the order they run.
func scenarioNames() []string {
	return []string{"cached-key", "cached-key-http", "cached-session", "jwt-first-sight", "invalid-flood", "mixed",
		"proxy-cached-key", "cold-key", "cold-key-redis", "redis-key"}
}

// material is what the scenarios draw credentials from.
type material struct {
	keys       Keys
	n          int      // keys in the database
	cachedKeys []string // indices 0..CachedKeys-1
	redisKeys  []string // the next RedisKeys indices
	unknown    []string
	sessions   []string   // cached-session tokens
	firstSight [][]string // per run index
	runCap     int64      // Config.Requests: cold-key runs use disjoint slices of the walk
	walk       permutation
}

func apiKey(k string) credential { return credential{header: "authorization", value: "Bearer " + k} }
func bearer(t string) credential { return credential{header: "authorization", value: "Bearer " + t} }

func creds(list []string, f func(string) credential) []credential {
	out := make([]credential, len(list))
	for i, s := range list {
		out[i] = f(s)
	}
	return out
}

// buildScenarios returns the selected scenarios over m.
func buildScenarios(cfg *Config, m *material) []*scenario {
	cycle := func(list []string, f func(string) credential) func(int, int64) credential {
		return func(_ int, i int64) credential { return f(list[i%int64(len(list))]) }
	}
	warmAll := func(list []string, f func(string) credential) func(int) []credential {
		return func(int) []credential { return creds(list, f) }
	}
	cold := func(ri int, i int64) credential {
		return apiKey(m.keys.Known(m.walk.at(int64(ri)*m.runCap + i)))
	}
	all := []*scenario{
		{name: "cached-key", about: "one of 100 API keys, all in the LRU (Authorization: Bearer)",
			profile: profileMain, cred: cycle(m.cachedKeys, apiKey), warm: warmAll(m.cachedKeys, apiKey), warmExpect: "allow"},
		{name: "cached-key-http", about: "cached-key over HTTP forward-auth (vegeta)", http: true,
			profile: profileMain, cred: cycle(m.cachedKeys, apiKey), warm: warmAll(m.cachedKeys, apiKey), warmExpect: "allow"},
		{name: "cached-session", about: "one of 100 verified session JWTs, cached", needsJWT: true,
			profile: profileMain, cred: cycle(m.sessions, bearer), warm: warmAll(m.sessions, bearer), warmExpect: "allow"},
		{name: "jwt-first-sight", about: "every request a new RS256 session JWT (signature verified)", needsJWT: true,
			profile: profileMain, requestCap: int64(len(firstOr(m.firstSight))), fresh: true,
			cred: func(ri int, i int64) credential { return bearer(m.firstSight[ri][i%int64(len(m.firstSight[ri]))]) }},
		{name: "invalid-flood", about: "well-formed unknown keys (500 distinct), negative cache",
			profile: profileMain, cred: cycle(m.unknown, apiKey), warm: warmAll(m.unknown, apiKey), warmExpect: "deny"},
		{name: "mixed", about: "70% cached keys, 25% cached JWTs, 5% unknown keys", needsJWT: true,
			profile: profileMain, cred: mixed(m), warm: func(int) []credential {
				return append(append(creds(m.cachedKeys, apiKey), creds(m.sessions, bearer)...), creds(m.unknown, apiKey)...)
			}},
		{name: "proxy-cached-key", about: "the cached-key credentials over HTTP to the proxy URL (no baseline, no server CPU)", http: true, proxy: true,
			profile: profileMain, cred: cycle(m.cachedKeys, apiKey)},
		{name: "cold-key", about: "every request a different key: tiny LRU, no Redis, PostgreSQL lookup",
			profile: profileCold, cred: cold, fresh: true},
		{name: "cold-key-redis", about: "every request a different key: tiny LRU, Redis miss then PostgreSQL", needsRedis: true,
			profile: profileColdRedis, cred: cold, fresh: true},
		{name: "redis-key", about: "keys cycling through a set larger than the tiny LRU, all in Redis", needsRedis: true,
			profile: profileColdRedis, cred: cycle(m.redisKeys, apiKey), warm: warmAll(m.redisKeys, apiKey), warmExpect: "allow"},
	}
	var out []*scenario
	for _, s := range all {
		if !cfg.wants(s.name) || (s.proxy && cfg.ProxyURL == "") || (s.needsRedis && cfg.RedisURL == "") {
			continue
		}
		if r := cfg.Remote; r != nil && (!slices.Contains(remoteScenarios, s.name) || (s.needsJWT && r.MintURL == "")) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// mixed is 70% cached keys, 25% cached session tokens, 5% unknown keys,
// interleaved request by request.
func mixed(m *material) func(int, int64) credential {
	return func(_ int, i int64) credential {
		switch j := i % 20; {
		case j < 14:
			return apiKey(m.cachedKeys[i%int64(len(m.cachedKeys))])
		case j < 19:
			return bearer(m.sessions[i%int64(len(m.sessions))])
		default:
			return apiKey(m.unknown[i%int64(len(m.unknown))])
		}
	}
}

func firstOr(s [][]string) []string {
	if len(s) == 0 {
		return nil
	}
	return s[0]
}

// profiles returns the profiles the scenarios need, in order.
func profiles(list []*scenario) []string {
	var out []string
	for _, s := range list {
		if !slices.Contains(out, s.profile) {
			out = append(out, s.profile)
		}
	}
	return out
}
