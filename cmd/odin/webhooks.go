package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/odin-scan/odin-authz/admin/adminclient"
	"github.com/odin-scan/odin-authz/admin/api"
	"github.com/odin-scan/odin-authz/admin/webhooks"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// outgoingWebhookFlags are odin admin's settings of the outgoing webhooks.
type outgoingWebhookFlags struct {
	url, secret, file string
	maxAttempts, conc int
	timeout           time.Duration
	expiringDays      int
}

func (o *outgoingWebhookFlags) bind(f *flags) {
	f.String(&o.url, "outgoing-webhook-url", "ODIN_OUTGOING_WEBHOOK_URL", "",
		"an endpoint that receives every event (key.created, key.revoked, key.rolled, key.expiring, session.revoked), signed with --outgoing-webhook-secret; more endpoints, or a filter on types: --outgoing-webhooks-file")
	f.Secret(&o.secret, "outgoing-webhook-secret", "ODIN_OUTGOING_WEBHOOK_SECRET",
		"Standard Webhooks signing secret of --outgoing-webhook-url: whsec_ and the base64 of 24 to 64 random bytes")
	f.String(&o.file, "outgoing-webhooks-file", "ODIN_OUTGOING_WEBHOOKS_FILE", "",
		`JSON file of endpoints: [{"name": "dashboard", "url": "https://...", "secret": "whsec_...", "types": ["key.revoked"]}] (types optional: all); read at start`)
	f.Int(&o.maxAttempts, "outgoing-webhook-max-attempts", "ODIN_OUTGOING_WEBHOOK_MAX_ATTEMPTS", webhooks.DefaultMaxAttempts,
		"attempts of an event before it is failed (retries after 5s, 5m, 30m, 2h, 5h, 10h, 10h, then every 10h)")
	f.Duration(&o.timeout, "outgoing-webhook-timeout", "ODIN_OUTGOING_WEBHOOK_TIMEOUT", webhooks.DefaultTimeout,
		"deadline of one request to an endpoint; no 2xx answer by then is a failed attempt")
	f.Int(&o.conc, "outgoing-webhook-concurrency", "ODIN_OUTGOING_WEBHOOK_CONCURRENCY", webhooks.DefaultConcurrency,
		"events delivered at once by this replica")
	f.Int(&o.expiringDays, "key-expiring-days", "ODIN_KEY_EXPIRING_DAYS", webhooks.DefaultExpiringDays,
		"send key.expiring this many days before a key expires, once per key and expiry (0: never; at most 30)")
}

// options are the worker's settings from the flags. Secrets are checked,
// never quoted.
func (o *outgoingWebhookFlags) options() (webhooks.Options, error) {
	var eps []webhooks.Endpoint
	if o.file != "" {
		raw, err := os.ReadFile(o.file)
		if err != nil {
			return webhooks.Options{}, fmt.Errorf("--outgoing-webhooks-file: %w", err)
		}
		if eps, err = webhooks.ParseEndpoints(raw); err != nil {
			return webhooks.Options{}, fmt.Errorf("--outgoing-webhooks-file %s: %w", o.file, err)
		}
	}
	switch {
	case o.url != "" && o.secret == "":
		return webhooks.Options{}, errors.New("--outgoing-webhook-url needs --outgoing-webhook-secret (ODIN_OUTGOING_WEBHOOK_SECRET)")
	case o.url == "" && o.secret != "":
		return webhooks.Options{}, errors.New("--outgoing-webhook-secret is set without --outgoing-webhook-url")
	case o.url != "":
		eps = append(eps, webhooks.Endpoint{Name: "default", URL: o.url, Secret: o.secret})
	}
	if err := webhooks.ValidateEndpoints(eps); err != nil {
		return webhooks.Options{}, err
	}
	if o.maxAttempts < 1 {
		return webhooks.Options{}, errors.New("--outgoing-webhook-max-attempts must be at least 1")
	}
	if o.timeout <= 0 {
		return webhooks.Options{}, errors.New("--outgoing-webhook-timeout must be positive")
	}
	if o.conc < 1 {
		return webhooks.Options{}, errors.New("--outgoing-webhook-concurrency must be at least 1")
	}
	if o.expiringDays < 0 || o.expiringDays > 30 {
		return webhooks.Options{}, errors.New("--key-expiring-days must be between 0 and 30")
	}
	return webhooks.Options{Endpoints: eps, MaxAttempts: o.maxAttempts, Timeout: o.timeout, Concurrency: o.conc,
		ExpiringWithin: time.Duration(o.expiringDays) * 24 * time.Hour}, nil
}

const webhooksUsage = `Usage: odin webhooks <deliveries|retry> [flags]

  deliveries [--status pending|delivered|failed|skipped] [--type T] [--limit N] [--cursor C] [--json]
             outgoing webhook events and their delivery state, newest first
  retry <id> [--json]
             attempt a pending event now, or give a failed one one more attempt

They act on the database (--database-url, ODIN_DATABASE_URL), or, when
--admin-url (ODIN_ADMIN_URL) is set, through the admin API with the operator
token (--admin-token, ODIN_ADMIN_TOKEN).

Run 'odin webhooks <subcommand> -h' for every flag.
`

func runWebhooks(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSubcommand(ctx, "webhooks", webhooksUsage, map[string]subcommand{
		"deliveries": webhooksDeliveries, "retry": webhooksRetry,
	}, args, stdout, stderr)
}

// deliveryAdmin is where the webhooks commands act: the database's outbox
// or the admin API.
type deliveryAdmin interface {
	Deliveries(ctx context.Context, q adminclient.WebhookDeliveriesQuery) (api.WebhookDeliveryPage, error)
	Retry(ctx context.Context, id int64) (api.WebhookDelivery, error)
	Close()
}

// outboxDB is deliveryAdmin on the database.
type outboxDB struct{ store *pgstore.Store }

func (d outboxDB) Deliveries(ctx context.Context, q adminclient.WebhookDeliveriesQuery) (api.WebhookDeliveryPage, error) {
	events, next, err := d.store.ListOutbox(ctx, keystore.OutboxFilter{Status: q.Status, Type: q.Type, Limit: q.Limit, Cursor: q.Cursor})
	if err != nil {
		return api.WebhookDeliveryPage{}, err
	}
	page := api.WebhookDeliveryPage{Deliveries: make([]api.WebhookDelivery, 0, len(events)), NextCursor: next}
	for _, e := range events {
		page.Deliveries = append(page.Deliveries, api.NewWebhookDelivery(e))
	}
	return page, nil
}

func (d outboxDB) Retry(ctx context.Context, id int64) (api.WebhookDelivery, error) {
	e, err := d.store.RetryOutbox(ctx, id, time.Now())
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return api.WebhookDelivery{}, fmt.Errorf("no delivery with id %d", id)
	case err != nil:
		return api.WebhookDelivery{}, err
	}
	return api.NewWebhookDelivery(e), nil
}

func (d outboxDB) Close() { d.store.Close() }

// outboxAPI is deliveryAdmin over the admin API.
type outboxAPI struct{ c *adminClient }

func (a outboxAPI) Deliveries(ctx context.Context, q adminclient.WebhookDeliveriesQuery) (api.WebhookDeliveryPage, error) {
	p, err := a.c.api.WebhookDeliveries(ctx, q)
	return p, cliError(err)
}

func (a outboxAPI) Retry(ctx context.Context, id int64) (api.WebhookDelivery, error) {
	d, err := a.c.api.RetryWebhookDelivery(ctx, id)
	return d, cliError(err)
}

func (a outboxAPI) Close() {}

func openDeliveryAdmin(ctx context.Context, b backendFlags, stderr io.Writer) (deliveryAdmin, error) {
	if b.admin.url != "" {
		c, err := newAdminClient(b.admin, stderr)
		if err != nil {
			return nil, err
		}
		return outboxAPI{c}, nil
	}
	if b.store.databaseURL == "" {
		return nil, errMissingBackend
	}
	s, err := pgstore.Open(ctx, b.store.databaseURL, pgstore.Options{MaxConns: 2})
	if err != nil {
		return nil, err
	}
	return outboxDB{s}, nil
}

// webhooksDeliveriesConfig is what odin webhooks deliveries' flags set.
type webhooksDeliveriesConfig struct {
	backend backendFlags
	q       adminclient.WebhookDeliveriesQuery
	json    bool
}

func webhooksDeliveriesFlagSet(c *webhooksDeliveriesConfig) *flags {
	f := newFlags("webhooks deliveries", "List outgoing webhook events and their delivery state, newest first.")
	c.backend.bind(f)
	f.String(&c.q.Status, "status", "", "", "only events in this state: pending, delivered, failed or skipped")
	f.String(&c.q.Type, "type", "", "", "only events of this type, e.g. key.revoked")
	f.Int(&c.q.Limit, "limit", "", 50, "page size, 1 to 1000")
	f.String(&c.q.Cursor, "cursor", "", "", "next-page cursor printed by the previous page")
	f.Bool(&c.json, "json", "", false, "print JSON")
	return f
}

func webhooksDeliveries(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c webhooksDeliveriesConfig
	f, err := parseFlags(&c, webhooksDeliveriesFlagSet, args, stderr)
	if err != nil {
		return err
	}
	if err := f.noArgs(); err != nil {
		return err
	}
	if c.q.Limit < 1 || c.q.Limit > 1000 {
		return errors.New("webhooks deliveries: --limit must be between 1 and 1000")
	}
	da, err := openDeliveryAdmin(ctx, c.backend, stderr)
	if err != nil {
		return err
	}
	defer da.Close()
	page, err := da.Deliveries(ctx, c.q)
	if err != nil {
		return fmt.Errorf("webhooks deliveries: %w", err)
	}
	if c.json {
		return writeJSON(stdout, page)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTYPE\tSTATUS\tATTEMPTS\tCREATED\tNEXT ATTEMPT\tLAST ERROR")
	for _, d := range page.Deliveries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", d.ID, d.Type, d.Status, d.Attempts,
			d.Created.Format(time.RFC3339), orDash(d.NextAttemptAt), orDashString(d.LastError))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.NextCursor != "" {
		fmt.Fprintf(stderr, "more: odin webhooks deliveries --cursor %s\n", page.NextCursor)
	}
	return nil
}

// webhooksRetryConfig is what odin webhooks retry's flags set.
type webhooksRetryConfig struct {
	backend backendFlags
	json    bool
}

func webhooksRetryFlagSet(c *webhooksRetryConfig) *flags {
	f := newFlags("webhooks retry", "Attempt a pending outgoing webhook event now, or give a failed one one more attempt.")
	c.backend.bind(f)
	f.Bool(&c.json, "json", "", false, "print the delivery as JSON")
	return f
}

func webhooksRetry(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c webhooksRetryConfig
	f, err := parseFlags(&c, webhooksRetryFlagSet, args, stderr)
	if err != nil {
		return err
	}
	if len(f.positional) != 1 {
		return errors.New("webhooks retry: exactly one delivery id is required")
	}
	id, err := strconv.ParseInt(f.positional[0], 10, 64)
	if err != nil || id <= 0 {
		return fmt.Errorf("webhooks retry: %q is not a delivery id (a number, from odin webhooks deliveries)", f.positional[0])
	}
	da, err := openDeliveryAdmin(ctx, c.backend, stderr)
	if err != nil {
		return err
	}
	defer da.Close()
	d, err := da.Retry(ctx, id)
	if err != nil {
		return fmt.Errorf("webhooks retry: %w", err)
	}
	return printResult(stdout, c.json, d, "delivery %d (%s) is %s, next attempt at %s\n", d.ID, d.Type, d.Status, orDash(d.NextAttemptAt))
}
