// Package credential holds the rules odin authz and odin admin share about
// what a caller presents: how the Authorization and api-key headers are read
// (ParseBearer, ParseAPIKey) and when a verified session token is admitted
// (Admission). Both services call these, so they cannot disagree on what
// they accept.
package credential

import "strings"

// MaxLen bounds a credential: longer values are refused before any parsing.
// Clerk session tokens are well under 4 KiB.
const MaxLen = 8 << 10

// The reasons a header value is not a credential. They are logged and used
// as metric label values; none contains the value.
const (
	ReasonNotBearer    = "not_bearer"
	ReasonEmpty        = "empty"
	ReasonOversized    = "oversized"
	ReasonNonPrintable = "non_printable"
)

// ParseBearer returns the token of an Authorization value, or the reason it
// is not a Bearer credential. Surrounding whitespace is trimmed; the scheme
// is case-insensitive and followed by a space or a tab, then the token
// (further whitespace before it is trimmed too). RFC 7235 asks for spaces;
// a tab is accepted as well because the token may contain no whitespace at
// all, so the value stays unambiguous. The token must be printable ASCII,
// at most MaxLen bytes.
func ParseBearer(v string) (token, reason string) {
	v = strings.TrimSpace(v)
	const scheme = "bearer"
	if len(v) < len(scheme)+1 || !strings.EqualFold(v[:len(scheme)], scheme) || (v[len(scheme)] != ' ' && v[len(scheme)] != '\t') {
		return "", ReasonNotBearer
	}
	token = strings.TrimSpace(v[len(scheme)+1:])
	if reason := CheckPrintable(token); reason != "" {
		return "", reason
	}
	return token, ""
}

// ParseAPIKey returns the value of an api-key header, whitespace trimmed,
// or the reason it cannot be a credential. Whether it is an odin_sk_ key
// is the caller's to check.
func ParseAPIKey(v string) (token, reason string) {
	v = strings.TrimSpace(v)
	if reason := CheckPrintable(v); reason != "" {
		return "", reason
	}
	return v, ""
}

// CheckPrintable refuses empty, oversized and non-printable-ASCII values
// (spaces included). Real credentials are base62 or base64url with dots;
// anything else is noise or an attack.
func CheckPrintable(v string) string {
	if v == "" {
		return ReasonEmpty
	}
	if len(v) > MaxLen {
		return ReasonOversized
	}
	if !printable(v) {
		return ReasonNonPrintable
	}
	return ""
}

// SWAR constants: a byte repeated in each of a word's eight bytes.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// printable reports whether every byte of v is printable ASCII other than
// space ('!' to '~'). It checks eight bytes at a time: every check runs it
// over the whole credential (a session token is about a kilobyte), and a
// byte loop cost a tenth of a cached check.
func printable(v string) bool {
	for len(v) >= 8 {
		// The compiler makes these eight byte loads one 64-bit load, with
		// no bounds check after the first.
		s := v[:8]
		w := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
		v = v[8:]
		// A byte below '!' (0x21): w-0x21 borrows into its high bit while
		// the byte's own high bit is clear. A byte above '~' (0x7e): its
		// low seven bits plus 1 reach the high bit, or its high bit is set.
		// Bytes with their high bit set are caught by the second test, so
		// the first one's answer for them does not matter.
		low := (w - 0x21*ones) &^ w & highs
		high := ((w &^ highs) + ones | w) & highs
		if low|high != 0 {
			return false
		}
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}
