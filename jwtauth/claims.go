package jwtauth

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// claims is the decoded payload, member names exact (see parseHeader).
type claims map[string]json.RawMessage

// sessionFromPayload decodes the (already signature-checked) payload,
// validates the registered claims and maps it to a Session.
func (v *Verifier) sessionFromPayload(seg string, now time.Time) (*Session, error) {
	raw, err := b64.DecodeString(seg)
	if err != nil {
		return nil, invalid(ReasonMalformed, "payload is not base64url")
	}
	var c claims
	if err := json.Unmarshal(raw, &c); err != nil || c == nil {
		return nil, invalid(ReasonMalformed, "payload is not a JSON object")
	}
	s, err := v.validate(c, now)
	if err != nil {
		return nil, err
	}
	if err := v.mapClaims(c, s); err != nil {
		return nil, err
	}
	return s, nil
}

// validate applies docs/CONTRACT.md's session rules to the registered claims and fills the Session
// fields they give.
func (v *Verifier) validate(c claims, now time.Time) (*Session, error) {
	leeway := v.cfg.Leeway
	iss, _, err := c.str("iss")
	if err != nil {
		return nil, err
	}
	if iss != v.cfg.Issuer {
		return nil, invalid(ReasonBadIssuer, "iss is not the configured issuer")
	}
	s := &Session{}
	var ok bool
	if s.Expiry, ok, err = c.date("exp"); err != nil {
		return nil, err
	} else if !ok {
		return nil, invalid(ReasonExpired, "no exp")
	}
	if !now.Before(s.Expiry.Add(leeway)) {
		return nil, invalid(ReasonExpired, "token expired")
	}
	if s.NotBefore, ok, err = c.date("nbf"); err != nil {
		return nil, err
	} else if ok && now.Add(leeway).Before(s.NotBefore) {
		return nil, invalid(ReasonNotYetValid, "nbf is in the future")
	}
	if s.IssuedAt, ok, err = c.date("iat"); err != nil {
		return nil, err
	} else if ok && now.Add(leeway).Before(s.IssuedAt) {
		return nil, invalid(ReasonNotYetValid, "iat is in the future")
	}
	if s.AuthorizedParty, _, err = c.str("azp"); err != nil {
		return nil, err
	}
	if len(v.azp) > 0 && !v.azp[s.AuthorizedParty] {
		return nil, invalid(ReasonBadAZP, "azp missing or not an authorized party")
	}
	if len(v.cfg.Audience) > 0 {
		aud, err := c.strings("aud", false)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(v.cfg.Audience, a) }) {
			return nil, invalid(ReasonBadAudience, "aud names no configured audience")
		}
	}
	if s.Subject, _, err = c.str("sub"); err != nil {
		return nil, err
	} else if s.Subject == "" {
		return nil, invalid(ReasonBadClaims, "no sub")
	}
	if s.SessionID, _, err = c.str("sid"); err != nil {
		return nil, err
	}
	if s.Actor, err = c.actor(); err != nil {
		return nil, err
	}
	return s, nil
}

// actor reads the act (actor) claim of an impersonated session: an object
// whose sub is the impersonator's user id (Clerk adds iss and sid; RFC 8693
// allows a nested act for a chain, of which the outermost actor is the
// current one). An act claim that cannot be read refuses the token: an
// impersonation must never pass for the user's own session.
func (c claims) actor() (string, error) {
	if raw, ok := c["act"]; !ok || string(raw) == "null" {
		return "", nil
	}
	act, err := c.object("act")
	if err != nil {
		return "", err
	}
	sub, _, err := act.str("sub")
	if err != nil {
		return "", err
	}
	if sub == "" {
		return "", invalid(ReasonBadClaims, "act has no sub")
	}
	return sub, nil
}

// mapClaims fills the organisation, permissions and tier. A v2 token
// ("v": 2) carries the organisation in "o"; anything else is read as v1, as
// Clerk's own SDK does.
func (v *Verifier) mapClaims(c claims, s *Session) error {
	var perms []string
	if version, _ := c.number("v"); version == 2 {
		o, err := c.object("o")
		if err != nil {
			return err
		}
		var rol, per, fpm string
		for _, f := range []struct {
			name string
			dst  *string
		}{{"id", &s.OrgID}, {"slg", &s.OrgSlug}, {"rol", &rol}, {"per", &per}, {"fpm", &fpm}} {
			if *f.dst, _, err = o.str(f.name); err != nil {
				return err
			}
		}
		if rol != "" && !strings.HasPrefix(rol, "org:") {
			rol = "org:" + rol
		}
		s.OrgRole = rol
		fea, _, err := c.str("fea")
		if err != nil {
			return err
		}
		perms = clerkOrgPermissions(per, fpm, fea)
	} else {
		var err error
		for _, f := range []struct {
			name string
			dst  *string
		}{{"org_id", &s.OrgID}, {"org_slug", &s.OrgSlug}, {"org_role", &s.OrgRole}} {
			if *f.dst, _, err = c.str(f.name); err != nil {
				return err
			}
		}
		if perms, err = c.strings("org_permissions", false); err != nil {
			return err
		}
	}
	if name := v.cfg.Claims.PermissionsClaim; name != "" {
		extra, err := c.strings(name, true)
		if err != nil {
			return err
		}
		perms = append(perms, extra...)
	}
	s.Permissions = cleanScopes(perms)
	s.Tier = v.tier(c)
	return nil
}

// tier reads the tier claim at the top level, then inside the metadata
// objects a customised Clerk session token usually carries. A missing or
// unusable value (not a short identifier) gives DefaultTier.
func (v *Verifier) tier(c claims) string {
	name := v.cfg.Claims.TierClaim
	if t, ok, err := c.str(name); err == nil && ok && validTier(t) {
		return t
	}
	for _, container := range []string{"metadata", "public_metadata"} {
		if o, err := c.object(container); err == nil {
			if t, ok, err := o.str(name); err == nil && ok && validTier(t) {
				return t
			}
		}
	}
	return v.cfg.Claims.DefaultTier
}

func validTier(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// clerkOrgPermissions expands Clerk's compact v2 permissions. o.per lists
// permission names ("read,manage"); the org-scoped features are the "o:"
// entries of fea ("o:scans,o:billing"); o.fpm gives, per feature, a bitmask
// over per whose most significant of len(per) bits is per[0]. Each set bit
// yields "org:<feature>:<permission>", as Clerk's SDK expands them. A mask
// wider than len(per) bits is malformed and grants nothing. Without fpm the
// per entries are returned as given.
func clerkOrgPermissions(per, fpm, fea string) []string {
	perms := splitList(per, ",")
	if fpm == "" {
		return perms
	}
	var features []string
	for _, f := range splitList(fea, ",") {
		if name, ok := strings.CutPrefix(f, "o:"); ok && name != "" {
			features = append(features, name)
		}
	}
	masks := splitList(fpm, ",")
	n := len(perms)
	var out []string
	for i, feature := range features {
		if i >= len(masks) || n == 0 || n > 63 {
			break
		}
		m, err := strconv.ParseUint(masks[i], 10, 64)
		if err != nil || m>>n != 0 {
			continue
		}
		for j, p := range perms {
			if m>>(n-1-j)&1 == 1 {
				out = append(out, "org:"+feature+":"+p)
			}
		}
	}
	return out
}

// splitList splits s on sep and drops empty, trimmed entries.
func splitList(s, sep string) []string {
	var out []string
	for _, p := range strings.Split(s, sep) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// cleanScopes drops duplicates and entries that could not travel in a
// space- or comma-separated header (empty, too long, spaces, commas,
// control or non-ASCII characters).
func cleanScopes(in []string) []string {
	var out []string
	for _, p := range in {
		if p == "" || len(p) > 256 || slices.Contains(out, p) {
			continue
		}
		ok := true
		for i := 0; i < len(p) && ok; i++ {
			ok = p[i] > ' ' && p[i] < 0x7f && p[i] != ','
		}
		if ok {
			out = append(out, p)
		}
	}
	return out
}

// str returns the string claim name; absent gives "", false. A present
// claim of another type is a bad claim.
func (c claims) str(name string) (string, bool, error) {
	raw, ok := c[name]
	if !ok || string(raw) == "null" {
		return "", false, nil
	}
	// Fast path: a string without escapes is its own content (raw comes
	// from a document json.Unmarshal accepted, so it is valid JSON).
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' &&
		!bytes.ContainsRune(raw, '\\') && utf8.Valid(raw) {
		return string(raw[1 : n-1]), true, nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false, invalid(ReasonBadClaims, "a claim is not a string")
	}
	return s, true, nil
}

// strings returns a claim that is a string or an array of strings. A single
// string is one value, or, with spaceSeparated, split on spaces (the OAuth
// "scope" form).
func (c claims) strings(name string, spaceSeparated bool) ([]string, error) {
	raw, ok := c[name]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list, nil
	}
	var one string
	if json.Unmarshal(raw, &one) != nil {
		return nil, invalid(ReasonBadClaims, "a claim is neither a string nor an array of strings")
	}
	if spaceSeparated {
		return strings.Fields(one), nil
	}
	return []string{one}, nil
}

// number returns a numeric claim.
func (c claims) number(name string) (float64, bool) {
	raw, ok := c[name]
	if !ok {
		return 0, false
	}
	f, err := parseNumber(raw)
	return f, err == nil
}

// parseNumber parses a JSON number. raw is a valid JSON value, so anything
// strconv accepts is a number (JSON has no NaN, Inf or hex literals).
func parseNumber(raw json.RawMessage) (float64, error) {
	return strconv.ParseFloat(string(raw), 64)
}

// date returns a NumericDate claim (seconds since the epoch, fractions
// allowed). Values before the epoch or after year 5138 are bad claims.
func (c claims) date(name string) (time.Time, bool, error) {
	raw, ok := c[name]
	if !ok || string(raw) == "null" {
		return time.Time{}, false, nil
	}
	f, err := parseNumber(raw)
	if err != nil || f < 0 || f > 1e11 {
		return time.Time{}, false, invalid(ReasonBadClaims, "a date claim is not a NumericDate")
	}
	sec := math.Floor(f)
	return time.Unix(int64(sec), int64((f-sec)*1e9)).UTC(), true, nil
}

// object returns a claim that is a JSON object; absent gives an empty one.
func (c claims) object(name string) (claims, error) {
	raw, ok := c[name]
	if !ok || string(raw) == "null" {
		return claims{}, nil
	}
	var o claims
	if json.Unmarshal(raw, &o) != nil || o == nil {
		return nil, invalid(ReasonBadClaims, "a claim is not an object")
	}
	return o, nil
}
