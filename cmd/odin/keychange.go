package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/admin/api"
	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/keystore"
)

// The changes of a key: odin keys update, disable and enable. Like a
// revoke, each answers only once every replica enforces the change, and
// exits 3 when that cannot be confirmed.

// updateKeyRequest is a change of a key, as PATCH /v1/keys/{id} takes it.
type updateKeyRequest = api.UpdateKeyRequest

// UpdateKey implements keyAdmin: the operator's change (any scopes, tier,
// expiry, own rate limit, network allowlist). A change not confirmed on
// every replica is returned with an *unconfirmedError.
func (e *keysEnv) UpdateKey(ctx context.Context, id string, req updateKeyRequest) (api.Key, error) {
	u := keystore.KeyUpdate{Name: req.Name, Scopes: req.Scopes, Tier: req.Tier}
	if req.ExpiresAt.Set {
		var at time.Time
		if req.ExpiresAt.At != nil {
			at = *req.ExpiresAt.At
		}
		u.ExpiresAt = &at
	}
	if req.RateLimit.Set {
		rl := req.RateLimit.Limit
		u.RateLimit = &rl
	}
	if req.AllowedCIDRs.Set {
		cidrs, err := keystore.ParseCIDRs(req.AllowedCIDRs.CIDRs)
		if err != nil {
			return api.Key{}, err
		}
		u.AllowedCIDRs = &cidrs
	}
	k, err := e.manager.Update(ctx, cliActor, id, u)
	return changedKey(k, err, id, "the same odin keys update command")
}

// DisableKey implements keyAdmin.
func (e *keysEnv) DisableKey(ctx context.Context, id string) (api.Key, error) {
	k, err := e.manager.Disable(ctx, cliActor, id)
	return changedKey(k, err, id, "odin keys disable "+id)
}

// EnableKey implements keyAdmin.
func (e *keysEnv) EnableKey(ctx context.Context, id string) (api.Key, error) {
	k, err := e.manager.Enable(ctx, cliActor, id)
	return changedKey(k, err, id, "odin keys enable "+id)
}

// changedKey is the answer of a change of key id on the database: the
// key, and an *unconfirmedError naming retry when it is not confirmed.
func changedKey(k *keystore.Key, err error, id, retry string) (api.Key, error) {
	if k == nil {
		if errors.Is(err, keystore.ErrConflict) {
			return api.Key{}, fmt.Errorf("only an active key can be changed: %w", err)
		}
		return api.Key{}, notFound(err, id)
	}
	return api.NewKey(k, time.Now()), unconfirmed(err, retry)
}

// UpdateKey implements keyAdmin with PATCH /v1/keys/{id}.
func (c *adminClient) UpdateKey(ctx context.Context, id string, req updateKeyRequest) (api.Key, error) {
	out, err := c.api.UpdateKey(ctx, id, req)
	return out, cliError(err)
}

// DisableKey implements keyAdmin with POST /v1/keys/{id}/disable.
func (c *adminClient) DisableKey(ctx context.Context, id string) (api.Key, error) {
	out, err := c.api.DisableKey(ctx, id)
	return out, cliError(err)
}

// EnableKey implements keyAdmin with POST /v1/keys/{id}/enable.
func (c *adminClient) EnableKey(ctx context.Context, id string) (api.Key, error) {
	out, err := c.api.EnableKey(ctx, id)
	return out, cliError(err)
}

// keysUpdateConfig is what odin keys update's flags set.
type keysUpdateConfig struct {
	backend    backendFlags
	name, tier string
	scopes     []string
	expiresIn  time.Duration
	noExpiry   bool
	rateLimit  string
	tierLimit  bool
	cidrs      []string
	anyNetwork bool
	json       bool
}

// keysUpdateFlagSet defines odin keys update's flags, writing to c.
func keysUpdateFlagSet(c *keysUpdateConfig) *flags {
	f := newFlags("keys update", "Change a key (key_...): the flags given, the rest left as it is. It is in force on every replica when the command returns.\nOver the admin API with a session token you may only rename, narrow the scopes and set the networks\n(widening them may ask for a recently verified second factor: --admin-reverify).")
	c.backend.bind(f)
	c.backend.bindMaxKeyLifetime(f)
	f.String(&c.name, "name", "", "", "new name")
	f.List(&c.scopes, "scopes", "", "new scopes, e.g. scans:read; '' for none")
	f.String(&c.tier, "tier", "", "", "new subscription tier")
	f.Duration(&c.expiresIn, "expires-in", "", 0, "new lifetime from now, e.g. 720h")
	f.Bool(&c.noExpiry, "no-expiry", "", false, "remove the expiry: the key never expires")
	f.String(&c.rateLimit, "rate-limit", "", "", "new "+rateLimitUsage+" (operator only)")
	f.Bool(&c.tierLimit, "tier-rate-limit", "", false, "remove the key's own rate limit: it goes back to its tier's (operator only)")
	f.List(&c.cidrs, "allowed-cidrs", "", "new "+allowedCIDRsUsage)
	f.Bool(&c.anyNetwork, "any-network", "", false, "remove the key's network allowlist: it may be used from any address")
	f.Bool(&c.json, "json", "", false, "print the changed record as JSON")
	return f
}

func keysUpdate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c keysUpdateConfig
	f, err := parseFlags(&c, keysUpdateFlagSet, args, stderr)
	if err != nil {
		return err
	}
	if len(f.positional) != 1 {
		return errors.New("keys update: exactly one key id is required")
	}
	id := f.positional[0]
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var req updateKeyRequest
	if set["name"] {
		req.Name = &c.name
	}
	if set["scopes"] {
		scopes := c.scopes
		if scopes == nil {
			scopes = []string{}
		}
		req.Scopes = &scopes
	}
	if set["tier"] {
		req.Tier = &c.tier
	}
	switch {
	case set["expires-in"] && c.noExpiry:
		return errors.New("keys update: --expires-in and --no-expiry: give one")
	case set["expires-in"]:
		if c.expiresIn <= 0 {
			return errors.New("keys update: --expires-in must be positive")
		}
		req.ExpiresAt = api.Expiry{Set: true, At: ptr(time.Now().Add(c.expiresIn).UTC())}
	case c.noExpiry:
		req.ExpiresAt = api.Expiry{Set: true}
	}
	switch {
	case set["rate-limit"] && c.tierLimit:
		return errors.New("keys update: --rate-limit and --tier-rate-limit: give one")
	case set["rate-limit"]:
		rl, err := parseRateLimit(c.rateLimit)
		if err != nil {
			return fmt.Errorf("keys update: %w", err)
		}
		req.RateLimit = api.OptionalRateLimit{Set: true, Limit: rl}
	case c.tierLimit:
		req.RateLimit = api.OptionalRateLimit{Set: true}
	}
	switch {
	case set["allowed-cidrs"] && c.anyNetwork:
		return errors.New("keys update: --allowed-cidrs and --any-network: give one")
	case set["allowed-cidrs"]:
		cidrs, err := parseAllowedCIDRs(c.cidrs)
		if err != nil {
			return fmt.Errorf("keys update: %w (--any-network removes the allowlist)", err)
		}
		req.AllowedCIDRs = api.OptionalCIDRs{Set: true, CIDRs: cidrs}
	case c.anyNetwork:
		req.AllowedCIDRs = api.OptionalCIDRs{Set: true}
	}
	if req.Name == nil && req.Scopes == nil && req.Tier == nil && !req.ExpiresAt.Set && !req.RateLimit.Set && !req.AllowedCIDRs.Set {
		return errors.New("keys update: nothing to change: give --name, --scopes, --tier, --expires-in, --no-expiry, --rate-limit, --tier-rate-limit, --allowed-cidrs or --any-network")
	}
	ka, err := c.backend.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer ka.Close()
	k, err := ka.UpdateKey(ctx, id, req)
	ue, err := committed("keys update", err)
	if err != nil {
		return err
	}
	err = printResult(stdout, c.json, k, "updated %s (%s): name %q, scopes %s, tier %s, expires %s, rate limit %s, networks %s\n",
		k.ID, k.Hint, k.Name, orDashString(strings.Join(k.Scopes, ",")), k.Tier, orDash(k.ExpiresAt), rateLimitString(k.RateLimit), networksString(k.AllowedCIDRs))
	if ue != nil {
		return fmt.Errorf("keys update: %s is changed but %w", k.ID, ue)
	}
	return err
}

// keysDisableFlagSet defines odin keys disable's flags, writing to c.
func keysDisableFlagSet(c *keyIDConfig) *flags {
	f := newFlags("keys disable", "Disable a key by id (key_...): it is refused (401, \"API key is disabled\") on every replica until enabled again.")
	c.backend.bind(f)
	f.Bool(&c.json, "json", "", false, "print the disabled record as JSON")
	return f
}

// keysEnableFlagSet defines odin keys enable's flags, writing to c.
func keysEnableFlagSet(c *keyIDConfig) *flags {
	f := newFlags("keys enable", "Enable a disabled key by id (key_...): it works again on every replica.")
	c.backend.bind(f)
	f.Bool(&c.json, "json", "", false, "print the enabled record as JSON")
	return f
}

func keysDisable(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c keyIDConfig
	id, ka, err := openKeyID(ctx, &c, keysDisableFlagSet, args, stderr)
	if err != nil {
		return err
	}
	defer ka.Close()
	k, err := ka.DisableKey(ctx, id)
	return printKeyChange(stdout, c.json, "keys disable", k, err, func(k api.Key) string {
		return fmt.Sprintf("disabled %s (%s) since %s\n", k.ID, k.Hint, orDash(k.DisabledAt))
	})
}

func keysEnable(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c keyIDConfig
	id, ka, err := openKeyID(ctx, &c, keysEnableFlagSet, args, stderr)
	if err != nil {
		return err
	}
	defer ka.Close()
	k, err := ka.EnableKey(ctx, id)
	return printKeyChange(stdout, c.json, "keys enable", k, err, func(k api.Key) string {
		return fmt.Sprintf("enabled %s (%s)\n", k.ID, k.Hint)
	})
}

// printKeyChange prints the key a change of command answered, as JSON or
// as text says, then returns the change's error: a failure, or the
// *unconfirmedError of a change that stands but is not confirmed (exit 3).
func printKeyChange(w io.Writer, asJSON bool, command string, k api.Key, err error, text func(api.Key) string) error {
	ue, err := committed(command, err)
	if err != nil {
		return err
	}
	err = printResult(w, asJSON, k, "%s", text(k))
	if ue != nil {
		return fmt.Errorf("%s: %s is changed but %w", command, k.ID, ue)
	}
	return err
}

// rateLimitUsage describes the --rate-limit flags.
const rateLimitUsage = "the key's own rate limit instead of its tier's, RATE/UNIT:BURST as in --rate-limit-tiers, e.g. 10/s:20 or 600/m:50"

// parseRateLimit reads a --rate-limit value.
func parseRateLimit(spec string) (*keystore.RateLimit, error) {
	t, err := ratelimit.ParseLimit(spec)
	if err != nil {
		return nil, fmt.Errorf("--rate-limit %q: %w", spec, err)
	}
	return &keystore.RateLimit{Rate: t.Rate, Burst: t.Burst}, nil
}

// rateLimitString shows a key's own rate limit, or "-" for its tier's.
func rateLimitString(r *keystore.RateLimit) string {
	if r == nil {
		return "-"
	}
	return r.String()
}

// allowedCIDRsUsage describes the --allowed-cidrs flags.
const allowedCIDRsUsage = "networks the key may be used from, e.g. 203.0.113.0/24,2001:db8::/32 (a bare address is a /32 or /128); a check from anywhere else is denied 403"

// parseAllowedCIDRs reads an --allowed-cidrs value: at least one network,
// each checked as the admin API checks it (keystore.ParseCIDRs), and
// returns them canonical, as the API takes them.
func parseAllowedCIDRs(list []string) ([]string, error) {
	if len(list) == 0 {
		return nil, errors.New("--allowed-cidrs is empty: give at least one network")
	}
	cidrs, err := keystore.ParseCIDRs(list)
	if err != nil {
		return nil, fmt.Errorf("--allowed-cidrs: %w", err)
	}
	return keystore.CIDRStrings(cidrs), nil
}

// networksString shows a key's network allowlist, or "any" when it has
// none.
func networksString(cidrs []netip.Prefix) string {
	if len(cidrs) == 0 {
		return "any"
	}
	return strings.Join(keystore.CIDRStrings(cidrs), ",")
}
