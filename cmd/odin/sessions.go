package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
)

const sessionsUsage = `Usage: odin sessions revoke <session-id> [--reason R] [--json]

  revoke  log a session (Clerk sid, sess_...) out everywhere: every token of it
          is refused by every replica from now on

Run 'odin sessions revoke -h' for every flag.
`

func runSessions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "revoke" {
		fmt.Fprint(stderr, sessionsUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return errors.New("sessions: the only subcommand is revoke")
	}
	f := newFlags("sessions revoke", "Revoke a session: PostgreSQL, then the Redis mirror, then every replica via the bus.")
	f.SetOutput(stderr)
	var (
		sf     storeFlags
		reason string
		asJSON bool
	)
	sf.bind(f)
	f.String(&reason, "reason", "", "operator", "why, for the record (e.g. logout, compromised)")
	f.BoolVar(&asJSON, "json", false, "print the revocation as JSON")
	if err := f.parse(args[1:]); err != nil {
		return err
	}
	if len(f.positional) != 1 {
		return errors.New("sessions revoke: exactly one session id is required")
	}
	env, err := openKeysEnv(ctx, sf, stderr)
	if err != nil {
		return err
	}
	defer env.close()
	r, err := env.manager.RevokeSession(ctx, cliActor, f.positional[0], reason)
	switch {
	case errors.Is(err, keystore.ErrNotPropagated):
		fmt.Fprintf(stderr, "odin: warning: %v; replicas pick it up within --session-sync\n", err)
	case err != nil:
		return fmt.Errorf("sessions revoke: %w", err)
	}
	if asJSON {
		return writeJSON(stdout, r)
	}
	_, err = fmt.Fprintf(stdout, "revoked session %s at %s (remembered until %s)\n", r.SessionID, r.RevokedAt.Format(time.RFC3339), r.ExpiresAt.Format(time.RFC3339))
	return err
}
