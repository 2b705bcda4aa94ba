// Package e2e checks `odin authz` end to end behind the proxies it ships
// configuration for: NGINX (envoy/nginx/nginx.conf, auth_request), Caddy
// (envoy/caddy/Caddyfile, forward_auth) and an Envoy stand-in speaking gRPC
// ext_authz (test/envoyproxy). Each test starts a real replica (PostgreSQL,
// Redis), an echo upstream and the proxy, then sends real HTTP requests.
//
// NGINX and Caddy are found on PATH (or ODIN_NGINX_BIN, ODIN_CADDY_BIN, and
// $GOPATH/bin for Caddy); a test whose proxy is missing skips with a loud
// message, and fails under CI=true. The package holds tests only.
package e2e
