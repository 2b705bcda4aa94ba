// Command odin is Odin authz: the Envoy ext_authz server (`odin authz`),
// its schema migrations (`odin migrate`) and the operator CLI (`odin keys`).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/odin-scan/odin-authz/internal/cmdmain"
)

const usage = `Odin authz: API key and session authentication for Envoy ext_authz.

Usage: odin <command> [flags]

Commands:
  dev        DEVELOPMENT ONLY: authz, admin and a dev issuer in one process, no database (odin dev -h)
  authz      serve the Envoy ext_authz gRPC API (Check), health and metrics
  admin      serve the admin API: keys, sessions, Clerk webhooks, audit log
  migrate    apply the PostgreSQL schema migrations
  keys       create, list, get, roll and revoke API keys (odin keys -h)
  sessions   revoke a session: log it out on every replica (odin sessions -h)
  webhooks   outgoing webhook deliveries: list, retry (odin webhooks -h)
  devissuer  DEVELOPMENT ONLY: serve a JWKS and mint session tokens (odin devissuer -h)
  devcerts   DEVELOPMENT ONLY: write a CA, server and client certificates for TLS (odin devcerts -h)
  healthcheck  GET a health URL, exit 0 on 2xx (container health checks)
  check      send one Check (gRPC) or forward-auth (HTTP) request, print the decision (odin check -h)
  version    print the build: module version, VCS revision and time, Go version

Run 'odin <command> -h' for a command's flags and their ODIN_* variables.
`

func main() { cmdmain.Main("odin", run) }

// run dispatches a command line. Only main exits.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	command, err := cmdmain.Command(args, usage, stderr)
	if err != nil {
		return err
	}
	switch command {
	case "authz":
		return runAuthz(ctx, args[1:], stderr)
	case "admin":
		return runAdmin(ctx, args[1:], stderr)
	case "devissuer":
		return runDevIssuer(ctx, args[1:], stdout, stderr)
	case "devcerts":
		return runDevCerts(ctx, args[1:], stdout, stderr)
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr)
	case "check":
		return runCheck(ctx, args[1:], stdout, stderr)
	case "healthcheck":
		return runHealthcheck(ctx, args[1:], stderr)
	case "migrate":
		return runMigrate(ctx, args[1:], stderr)
	case "keys":
		return runKeys(ctx, args[1:], stdout, stderr)
	case "sessions":
		return runSessions(ctx, args[1:], stdout, stderr)
	case "webhooks":
		return runWebhooks(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		return runVersion(args[1:], stdout, stderr)
	case "config-reference": // not in the usage: it writes docs/CONFIGURATION.md
		return runConfigReference(args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", command)
}

// logOptions are the logging flags every command has.
type logOptions struct {
	level, format string
}

func (o *logOptions) bind(f *flags, defaultFormat string) {
	f.String(&o.level, "log-level", "ODIN_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	f.String(&o.format, "log-format", "ODIN_LOG_FORMAT", defaultFormat, "log format: json or text")
}

func (o *logOptions) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.level)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(o.format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", o.format)
}
