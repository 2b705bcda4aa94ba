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

// claims holds the raw JSON value of every claim Verify reads, nil when
// the claim is absent. Member names are exact ("EXP" is not exp) and a
// payload with a name twice is refused (see forEachMember); other claims
// are skipped without being parsed.
type claims struct {
	iss, sub, sid, azp, aud, exp, nbf, iat, act []byte
	// Clerk v2 ("v": 2): the organisation object and the features.
	v, o, fea []byte
	// Clerk's factor verification age (see FactorVerification).
	fva []byte
	// Clerk v1 organisation claims.
	orgID, orgSlug, orgRole, orgPermissions []byte
	// The objects a customised Clerk token carries its metadata in.
	metadata, publicMetadata []byte
	// The configured tier and permissions claims (ClaimsMapping); a name
	// may also be one of the above.
	tier, permissions []byte
}

// decodeClaims reads the payload JSON. ok is false when it is not one JSON
// object without duplicate member names.
func (v *Verifier) decodeClaims(raw []byte) (c claims, ok bool) {
	tierName, permName := v.cfg.Claims.TierClaim, v.cfg.Claims.PermissionsClaim
	ok = forEachMember(raw, func(name, value []byte) {
		switch string(name) {
		case "iss":
			c.iss = value
		case "sub":
			c.sub = value
		case "sid":
			c.sid = value
		case "azp":
			c.azp = value
		case "aud":
			c.aud = value
		case "exp":
			c.exp = value
		case "nbf":
			c.nbf = value
		case "iat":
			c.iat = value
		case "act":
			c.act = value
		case "v":
			c.v = value
		case "o":
			c.o = value
		case "fea":
			c.fea = value
		case "fva":
			c.fva = value
		case "org_id":
			c.orgID = value
		case "org_slug":
			c.orgSlug = value
		case "org_role":
			c.orgRole = value
		case "org_permissions":
			c.orgPermissions = value
		case "metadata":
			c.metadata = value
		case "public_metadata":
			c.publicMetadata = value
		}
		if string(name) == tierName {
			c.tier = value
		}
		if permName != "" && string(name) == permName {
			c.permissions = value
		}
	})
	return c, ok
}

// member returns the raw value of the member name of the JSON object obj
// (a value of a payload decodeClaims accepted), nil when absent.
func member(obj []byte, name string) []byte {
	var found []byte
	if obj != nil {
		forEachMember(obj, func(n, value []byte) {
			if string(n) == name {
				found = value
			}
		})
	}
	return found
}

// PeekSessionID returns the sid claim of token without verifying anything:
// a hint, for reading what is cached about the session ahead of the
// verification, never to be trusted before Verify returns the same sid. It
// is "" when the token has no readable sid.
func PeekSessionID(token string) string {
	if len(token) > MaxTokenSize {
		return ""
	}
	dot1 := strings.IndexByte(token, '.')
	dot2 := strings.LastIndexByte(token, '.')
	if dot1 < 0 || dot2 <= dot1 {
		return ""
	}
	raw, err := b64.DecodeString(token[dot1+1 : dot2])
	if err != nil {
		return ""
	}
	var sid []byte
	if !forEachMember(raw, func(name, value []byte) {
		if string(name) == "sid" {
			sid = value
		}
	}) {
		return ""
	}
	s, _, err := str(sid)
	if err != nil {
		return ""
	}
	return s
}

// sessionFromPayload decodes the (already signature-checked) payload,
// validates the registered claims and maps it to a Session.
func (v *Verifier) sessionFromPayload(seg string, now time.Time) (*Session, error) {
	raw, err := b64.DecodeString(seg)
	if err != nil {
		return nil, invalid(ReasonMalformed, "payload is not base64url")
	}
	c, ok := v.decodeClaims(raw)
	if !ok {
		return nil, invalid(ReasonMalformed, "payload is not a JSON object with distinct member names")
	}
	s, err := v.validate(&c, now)
	if err != nil {
		return nil, err
	}
	if err := v.mapClaims(&c, s); err != nil {
		return nil, err
	}
	return s, nil
}

// validate applies docs/CONTRACT.md's session rules to the registered claims and fills the Session
// fields they give.
func (v *Verifier) validate(c *claims, now time.Time) (*Session, error) {
	leeway := v.cfg.Leeway
	iss, _, err := str(c.iss)
	if err != nil {
		return nil, err
	}
	if iss != v.cfg.Issuer {
		return nil, invalid(ReasonBadIssuer, "iss is not the configured issuer")
	}
	s := &Session{}
	var ok bool
	if s.Expiry, ok, err = date(c.exp); err != nil {
		return nil, err
	} else if !ok {
		return nil, invalid(ReasonExpired, "no exp")
	}
	if !now.Before(s.Expiry.Add(leeway)) {
		return nil, invalid(ReasonExpired, "token expired")
	}
	if s.NotBefore, ok, err = date(c.nbf); err != nil {
		return nil, err
	} else if ok && now.Add(leeway).Before(s.NotBefore) {
		return nil, invalid(ReasonNotYetValid, "nbf is in the future")
	}
	if s.IssuedAt, ok, err = date(c.iat); err != nil {
		return nil, err
	} else if ok && now.Add(leeway).Before(s.IssuedAt) {
		return nil, invalid(ReasonNotYetValid, "iat is in the future")
	}
	if s.AuthorizedParty, _, err = str(c.azp); err != nil {
		return nil, err
	}
	if len(v.azp) > 0 && !v.azp[s.AuthorizedParty] {
		return nil, invalid(ReasonBadAZP, "azp missing or not an authorized party")
	}
	if len(v.cfg.Audience) > 0 {
		aud, err := stringList(c.aud, false)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(v.cfg.Audience, a) }) {
			return nil, invalid(ReasonBadAudience, "aud names no configured audience")
		}
	}
	if s.Subject, _, err = str(c.sub); err != nil {
		return nil, err
	} else if s.Subject == "" {
		return nil, invalid(ReasonBadClaims, "no sub")
	}
	if s.SessionID, _, err = str(c.sid); err != nil {
		return nil, err
	}
	if s.Actor, err = actor(c.act); err != nil {
		return nil, err
	}
	s.Factors = factorVerification(c.fva, s.IssuedAt)
	return s, nil
}

// actor reads the act (actor) claim of an impersonated session: an object
// whose sub is the impersonator's user id (Clerk adds iss and sid; RFC 8693
// allows a nested act for a chain, of which the outermost actor is the
// current one). An act claim that cannot be read refuses the token: an
// impersonation must never pass for the user's own session.
func actor(raw []byte) (string, error) {
	if raw == nil || string(raw) == "null" {
		return "", nil
	}
	act, err := object(raw)
	if err != nil {
		return "", err
	}
	sub, _, err := str(member(act, "sub"))
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
func (v *Verifier) mapClaims(c *claims, s *Session) error {
	var perms []string
	if version, _ := number(c.v); version == 2 {
		o, err := object(c.o)
		if err != nil {
			return err
		}
		var id, slg, rol, per, fpm []byte
		forEachMember(o, func(name, value []byte) {
			switch string(name) {
			case "id":
				id = value
			case "slg":
				slg = value
			case "rol":
				rol = value
			case "per":
				per = value
			case "fpm":
				fpm = value
			}
		})
		var role, perList, fpmList string
		for _, f := range []struct {
			raw []byte
			dst *string
		}{{id, &s.OrgID}, {slg, &s.OrgSlug}, {rol, &role}, {per, &perList}, {fpm, &fpmList}} {
			if *f.dst, _, err = str(f.raw); err != nil {
				return err
			}
		}
		if role != "" && !strings.HasPrefix(role, "org:") {
			role = "org:" + role
		}
		s.OrgRole = role
		fea, _, err := str(c.fea)
		if err != nil {
			return err
		}
		perms = clerkOrgPermissions(perList, fpmList, fea)
	} else {
		var err error
		for _, f := range []struct {
			raw []byte
			dst *string
		}{{c.orgID, &s.OrgID}, {c.orgSlug, &s.OrgSlug}, {c.orgRole, &s.OrgRole}} {
			if *f.dst, _, err = str(f.raw); err != nil {
				return err
			}
		}
		if perms, err = stringList(c.orgPermissions, false); err != nil {
			return err
		}
	}
	if v.cfg.Claims.PermissionsClaim != "" {
		extra, err := stringList(c.permissions, true)
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
func (v *Verifier) tier(c *claims) string {
	if t, ok, err := str(c.tier); err == nil && ok && validTier(t) {
		return t
	}
	for _, container := range [][]byte{c.metadata, c.publicMetadata} {
		if o, err := object(container); err == nil {
			if t, ok, err := str(member(o, v.cfg.Claims.TierClaim)); err == nil && ok && validTier(t) {
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

// str returns a string claim given its raw value; absent (nil) or null
// gives "", false. A present claim of another type is a bad claim.
func str(raw []byte) (string, bool, error) {
	if raw == nil || string(raw) == "null" {
		return "", false, nil
	}
	// Fast path: a string without escapes is its own content (raw comes
	// from a document forEachMember accepted, so it is valid JSON).
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' &&
		bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw[1 : n-1]), true, nil
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false, invalid(ReasonBadClaims, "a claim is not a string")
	}
	return s, true, nil
}

// stringList returns a claim that is a string or an array of strings. A
// single string is one value, or, with spaceSeparated, split on spaces (the
// OAuth "scope" form).
func stringList(raw []byte, spaceSeparated bool) ([]string, error) {
	if raw == nil || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] == '"' {
		one, _, err := str(raw)
		if err != nil {
			return nil, invalid(ReasonBadClaims, "a claim is neither a string nor an array of strings")
		}
		if spaceSeparated {
			return strings.Fields(one), nil
		}
		return []string{one}, nil
	}
	var list []string
	if json.Unmarshal(raw, &list) != nil {
		return nil, invalid(ReasonBadClaims, "a claim is neither a string nor an array of strings")
	}
	return list, nil
}

// number returns a numeric claim.
func number(raw []byte) (float64, bool) {
	if raw == nil {
		return 0, false
	}
	f, err := parseNumber(raw)
	return f, err == nil
}

// parseNumber parses a JSON number, exponent form included. raw is a valid
// JSON value, so anything strconv accepts is a number (JSON has no NaN, Inf
// or hex literals; strings are quoted). A number beyond float64 is an error.
func parseNumber(raw []byte) (float64, error) {
	return strconv.ParseFloat(string(raw), 64)
}

// date returns a NumericDate claim (seconds since the epoch, fractions
// allowed). Values before the epoch or after year 5138 are bad claims.
func date(raw []byte) (time.Time, bool, error) {
	if raw == nil || string(raw) == "null" {
		return time.Time{}, false, nil
	}
	f, err := parseNumber(raw)
	if err != nil || f < 0 || f > 1e11 {
		return time.Time{}, false, invalid(ReasonBadClaims, "a date claim is not a NumericDate")
	}
	sec := math.Floor(f)
	return time.Unix(int64(sec), int64((f-sec)*1e9)).UTC(), true, nil
}

// object returns the raw value of a claim that must be a JSON object
// (within a payload decodeClaims accepted); absent or null gives nil, which
// reads as an empty object.
func object(raw []byte) ([]byte, error) {
	if raw == nil || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, invalid(ReasonBadClaims, "a claim is not an object")
	}
	return raw, nil
}
