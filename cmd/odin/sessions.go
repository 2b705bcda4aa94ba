package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

const sessionsUsage = `Usage: odin sessions revoke <session-id> [--reason R] [--json]

  revoke  log a session (Clerk sid, sess_...) out everywhere: every token of it
          is refused by every replica from now on

It acts on the database (--database-url, ODIN_DATABASE_URL), or, when
--admin-url (ODIN_ADMIN_URL) is set, through the admin API with --admin-token
(ODIN_ADMIN_TOKEN), and then needs no database URL.

Run 'odin sessions revoke -h' for every flag.
`

// sessionsRevokeConfig is what odin sessions revoke's flags set.
type sessionsRevokeConfig struct {
	backend backendFlags
	reason  string
	json    bool
}

// sessionsRevokeFlagSet defines odin sessions revoke's flags, writing to c.
func sessionsRevokeFlagSet(c *sessionsRevokeConfig) *flags {
	f := newFlags("sessions revoke", "Revoke a session: PostgreSQL, then the Redis mirror, then every replica via the bus.")
	c.backend.bind(f)
	f.String(&c.reason, "reason", "", "operator", "why, for the record (e.g. logout, compromised); the admin API records admin_api instead")
	f.Bool(&c.json, "json", "", false, "print the revocation as JSON")
	return f
}

func runSessions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "revoke" {
		fmt.Fprint(stderr, sessionsUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return errors.New("sessions: the only subcommand is revoke")
	}
	var c sessionsRevokeConfig
	f, err := parseFlags(&c, sessionsRevokeFlagSet, args[1:], stderr)
	if err != nil {
		return err
	}
	bf, reason, asJSON := c.backend, c.reason, c.json
	if len(f.positional) != 1 {
		return errors.New("sessions revoke: exactly one session id is required")
	}
	if bf.admin.url != "" {
		f.Visit(func(fl *flag.Flag) {
			if fl.Name == "reason" {
				fmt.Fprintln(stderr, "odin: warning: --reason is not sent over the admin API, which records admin_api")
			}
		})
	}
	ka, err := bf.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer ka.Close()
	r, err := ka.RevokeSession(ctx, f.positional[0], reason)
	ue, err := committed("sessions revoke", err)
	if err != nil {
		return err
	}
	err = printResult(stdout, asJSON, r, "revoked session %s at %s (remembered until %s)\n", r.SessionID, r.RevokedAt.Format(time.RFC3339), r.ExpiresAt.Format(time.RFC3339))
	if ue != nil {
		return fmt.Errorf("sessions revoke: %s is revoked but %w", r.SessionID, ue)
	}
	return err
}
