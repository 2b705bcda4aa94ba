package main

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// configReferenceHeader is the hand-written start of docs/CONFIGURATION.md;
// the tables after it are generated from the commands' flags.
//
//go:embed configref_header.md
var configReferenceHeader string

// configSection is one section of the configuration reference: a command,
// or a family of commands whose common flags are listed once.
type configSection struct {
	title, about string
	commands     []configCommand
}

// configCommand is a command and its flags, defined as its run function
// defines them (the values they write to are thrown away).
type configCommand struct {
	name  string // as typed after odin, e.g. "keys create"
	flags func() *flags
}

// configSections are every command with flags, in the order of the usage
// text (development commands last).
var configSections = []configSection{
	{title: "odin authz", about: "The ext_authz server: gRPC Check, HTTP forward-auth, and `/healthz`, `/readyz`, `/metrics` on the ops port.",
		commands: []configCommand{{"authz", func() *flags { return authzFlagSet(new(authzConfig)) }}}},
	{title: "odin admin", about: "The admin API: keys, sessions, Clerk webhooks, audit log, with `/healthz`, `/readyz`, `/metrics` on the same port; it also sends the outgoing webhooks.",
		commands: []configCommand{{"admin", func() *flags { return adminFlagSet(new(adminConfig)) }}}},
	{title: "odin migrate", about: "Applies the embedded PostgreSQL schema migrations.",
		commands: []configCommand{{"migrate", func() *flags { return migrateFlagSet(new(migrateConfig)) }}}},
	{title: "odin keys and odin sessions", about: "The operator CLI. Each subcommand acts on the database, or through the admin API when `--admin-url` is set.",
		commands: []configCommand{
			{"keys create", func() *flags { return keysCreateFlagSet(new(keysCreateConfig)) }},
			{"keys list", func() *flags { return keysListFlagSet(new(keysListConfig)) }},
			{"keys get", func() *flags { return keysGetFlagSet(new(keyIDConfig)) }},
			{"keys update", func() *flags { return keysUpdateFlagSet(new(keysUpdateConfig)) }},
			{"keys disable", func() *flags { return keysDisableFlagSet(new(keyIDConfig)) }},
			{"keys enable", func() *flags { return keysEnableFlagSet(new(keyIDConfig)) }},
			{"keys roll", func() *flags { return keysRollFlagSet(new(keysRollConfig)) }},
			{"keys revoke", func() *flags { return keysRevokeFlagSet(new(keyIDConfig)) }},
			{"sessions revoke", func() *flags { return sessionsRevokeFlagSet(new(sessionsRevokeConfig)) }},
		}},
	{title: "odin webhooks", about: "The delivery state of outgoing webhooks, on the database or through the admin API (operator token) when `--admin-url` is set.",
		commands: []configCommand{
			{"webhooks deliveries", func() *flags { return webhooksDeliveriesFlagSet(new(webhooksDeliveriesConfig)) }},
			{"webhooks retry", func() *flags { return webhooksRetryFlagSet(new(webhooksRetryConfig)) }},
		}},
	{title: "odin check", about: "Sends one Check (gRPC) or forward-auth (HTTP) request and prints the decision.",
		commands: []configCommand{{"check", func() *flags { return checkFlagSet(new(checkConfig)) }}}},
	{title: "odin healthcheck", about: "GETs a health URL; exit status 0 on a 2xx answer (container health checks).",
		commands: []configCommand{{"healthcheck", func() *flags { return healthcheckFlagSet(new(healthcheckConfig)) }}}},
	{title: "odin version", about: "Prints the build.",
		commands: []configCommand{{"version", func() *flags { return versionFlagSet(new(bool)) }}}},
	{title: "odin dev", about: "**Development only**: authz, admin and the dev issuer in one process on an embedded store.",
		commands: []configCommand{{"dev", func() *flags { return devFlagSet(new(devConfig), new(logOptions)) }}}},
	{title: "odin devissuer", about: "**Development only**: a JWKS and `POST /mint` for Clerk-shaped session tokens.",
		commands: []configCommand{{"devissuer", func() *flags { return devIssuerFlagSet(new(devIssuerConfig), new(logOptions), new(string)) }}}},
	{title: "odin devcerts", about: "**Development only**: writes a CA, a server and a client certificate for TLS and mutual TLS.",
		commands: []configCommand{{"devcerts", func() *flags { return devCertsFlagSet(new(devCertsConfig)) }}}},
}

const configReferenceUsage = `Usage: odin config-reference

Print the configuration reference (docs/CONFIGURATION.md) on stdout: every
command's flags, their environment variables and defaults, from the flags
themselves. In a clone of the repository:

  go run ./cmd/odin config-reference > docs/CONFIGURATION.md
`

// runConfigReference is `odin config-reference`, which writes
// docs/CONFIGURATION.md. It is not listed in odin -h: it is for this
// repository's documentation.
func runConfigReference(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		fmt.Fprint(stderr, configReferenceUsage)
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			return nil
		}
		return errors.New("config-reference takes no arguments")
	}
	_, err := io.WriteString(stdout, configReference())
	return err
}

// configReference renders docs/CONFIGURATION.md. It depends on the flags'
// declared defaults only, never on the environment.
func configReference() string {
	var b strings.Builder
	b.WriteString(configReferenceHeader)
	for _, s := range configSections {
		fmt.Fprintf(&b, "\n## `%s`\n\n%s\n", s.title, s.about)
		docs := make([][]flagDoc, len(s.commands))
		for i, c := range s.commands {
			docs[i] = c.flags().docs
		}
		if len(docs) == 1 {
			writeFlagTable(&b, docs[0])
			continue
		}
		common := commonFlags(docs)
		b.WriteString("\nFlags of every one of them:\n")
		writeFlagTable(&b, common)
		for i, c := range s.commands {
			fmt.Fprintf(&b, "\n### `odin %s`\n", c.name)
			own := slices.DeleteFunc(slices.Clone(docs[i]), func(d flagDoc) bool { return slices.Contains(common, d) })
			if len(own) == 0 {
				b.WriteString("\nNo other flags.\n")
				continue
			}
			writeFlagTable(&b, own)
		}
	}
	return b.String()
}

// commonFlags are the flags every set has, identically, in the first set's
// order.
func commonFlags(sets [][]flagDoc) []flagDoc {
	var common []flagDoc
	for _, d := range sets[0] {
		every := true
		for _, s := range sets[1:] {
			every = every && slices.Contains(s, d)
		}
		if every {
			common = append(common, d)
		}
	}
	return common
}

func writeFlagTable(w io.Writer, docs []flagDoc) {
	fmt.Fprint(w, "\n| flag | environment variable | default | description |\n|---|---|---|---|\n")
	for _, d := range docs {
		name := "--" + d.name
		if len(d.name) == 1 {
			name = "-" + d.name
		}
		env, def, usage := "—", "empty", markdownText(d.usage)
		if d.env != "" {
			env = "`" + d.env + "`"
		}
		switch {
		case d.secret:
			usage += " (secret: never shown)"
		case d.def != "":
			def = "`" + strings.ReplaceAll(d.def, "|", `\|`) + "`"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s | %s |\n", name, env, def, usage)
	}
}

// markdownText escapes s for a Markdown table cell: pipes everywhere, and
// outside `code` the characters Markdown would read as HTML or emphasis.
func markdownText(s string) string {
	var b strings.Builder
	code := false
	for _, r := range s {
		switch {
		case r == '`':
			code = !code
		case r == '|':
			b.WriteByte('\\')
		case code:
		case r == '<':
			b.WriteString("&lt;")
			continue
		case r == '>':
			b.WriteString("&gt;")
			continue
		case r == '*':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
