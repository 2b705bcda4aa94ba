package policy

import (
	"strings"
	"unicode/utf8"
)

// Why canonicalPath refuses a path. Fixed strings: they end up in parse
// errors and tests, never with request data in them.
const (
	reasonNotAbsolute   = "does not start with /"
	reasonFragment      = "contains a fragment (#)"
	reasonRawByte       = "contains a space, control or non-ASCII byte"
	reasonBackslash     = `contains a backslash (\)`
	reasonSemicolon     = "contains a semicolon (;)"
	reasonBadEscape     = "contains a malformed percent escape"
	reasonEncodedDelim  = "contains an encoded /, \\, ., ; or % (%2F, %5C, %2E, %3B, %25)"
	reasonEncodedCtl    = "contains an encoded control character"
	reasonInvalidUTF8   = "decodes to invalid UTF-8"
	reasonEmptySegment  = "contains an empty segment (//)"
	reasonDotSegment    = "contains a . or .. segment"
	reasonQueryInPolicy = "contains a query (?)"
)

// canonicalPath returns the one form of an Envoy :path that rules are
// matched against, or a reason to refuse it.
//
// The query string is cut off. What remains must have a single reading for
// every server behind the proxy: a path that a normalising upstream, a
// non-normalising one, a Servlet container (";" parameters) or a
// double-decoding one could each route differently is refused rather than
// guessed at (the rules are listed in docs/POLICY.md). The accepted path is
// percent-decoded once and loses a trailing slash.
//
// A path with no percent escape is returned as a substring: no allocation.
func canonicalPath(raw string) (string, string) {
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	if raw == "" || raw[0] != '/' {
		return "", reasonNotAbsolute
	}
	escaped := false
	segStart := 1
	for i := 1; i <= len(raw); i++ {
		if i == len(raw) || raw[i] == '/' {
			switch seg := raw[segStart:i]; {
			case seg == "" && i < len(raw):
				return "", reasonEmptySegment
			case seg == "." || seg == "..":
				return "", reasonDotSegment
			}
			segStart = i + 1
			continue
		}
		switch c := raw[i]; {
		case c <= ' ' || c >= 0x7f:
			return "", reasonRawByte
		case c == '\\':
			return "", reasonBackslash
		case c == ';':
			return "", reasonSemicolon
		case c == '#':
			return "", reasonFragment
		case c == '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return "", reasonBadEscape
			}
			switch v := unhex(raw[i+1])<<4 | unhex(raw[i+2]); {
			case v == '/' || v == '\\' || v == '.' || v == ';' || v == '%':
				return "", reasonEncodedDelim
			case v < ' ' || v == 0x7f:
				return "", reasonEncodedCtl
			}
			escaped = true
			i += 2
		}
	}
	if len(raw) > 1 && raw[len(raw)-1] == '/' {
		raw = raw[:len(raw)-1]
	}
	if !escaped {
		return raw, ""
	}
	decoded := percentDecode(raw)
	if !utf8.ValidString(decoded) {
		return "", reasonInvalidUTF8
	}
	return decoded, ""
}

// percentDecode decodes the escapes of a path canonicalPath has checked.
func percentDecode(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// matchKind says how a rule compares the canonical path.
type matchKind uint8

const (
	matchExact   matchKind = iota // path: the whole path
	matchPrefix                   // prefix: the path or anything below it
	matchPattern                  // pattern: segment by segment, {param} and {rest...}
)

// pathMatcher is a rule's compiled path: one of the three kinds.
type pathMatcher struct {
	kind matchKind
	path string // exact path or prefix, canonical
	// below is path+"/" ("/" for the root prefix): a prefix matches at a
	// segment boundary only, so /v1/scans never matches /v1/scansecret.
	below string
	// lead is the literal start of a pattern, up to its first {param}
	// ("/v1/scans/" for /v1/scans/{id}): most paths fail on it at once.
	lead string
	segs []segment // pattern segments after lead; the first is a {param}
	rest bool      // the pattern ends in {name...}
}

// segment is one segment of a pattern: a literal, or a {param} matching
// any one non-empty segment.
type segment struct {
	lit   string
	param bool
}

// match reports whether the canonical path p matches. It never allocates.
func (m *pathMatcher) match(p string) bool {
	switch m.kind {
	case matchExact:
		return p == m.path
	case matchPrefix:
		return p == m.path || strings.HasPrefix(p, m.below)
	}
	// p is canonical: "/" or "/a/b", no empty segment, no trailing slash.
	if !strings.HasPrefix(p, m.lead) {
		return false
	}
	s := p[len(m.lead):]
	done := s == ""
	for _, seg := range m.segs {
		if done {
			return false
		}
		cur := s
		if i := strings.IndexByte(s, '/'); i >= 0 {
			cur, s = s[:i], s[i+1:]
		} else {
			s, done = "", true
		}
		if !seg.param && cur != seg.lit {
			return false
		}
	}
	return done || m.rest
}

// compilePath checks a path, prefix or pattern from the policy file and
// compiles it, or says why it is not usable as written.
func compilePath(kind matchKind, raw string) (pathMatcher, string) {
	if strings.ContainsRune(raw, '?') {
		return pathMatcher{}, quote(raw) + " " + reasonQueryInPolicy
	}
	p, reason := canonicalPath(raw)
	if reason != "" {
		return pathMatcher{}, quote(raw) + " " + reason
	}
	m := pathMatcher{kind: kind, path: p, below: p + "/"}
	if p == "/" {
		m.below = "/"
	}
	if kind != matchPattern {
		if strings.ContainsAny(p, "{}") {
			return pathMatcher{}, quote(raw) + " contains { or }: use pattern for {param} segments"
		}
		return m, ""
	}
	if p == "/" {
		m.kind = matchExact
		return m, ""
	}
	var lits []string // literal segments before the first {param}
	names := map[string]bool{}
	parts := strings.Split(p[1:], "/")
	for i, part := range parts {
		if !strings.ContainsAny(part, "{}") {
			if len(names) == 0 && !m.rest {
				lits = append(lits, part)
			} else {
				m.segs = append(m.segs, segment{lit: part})
			}
			continue
		}
		name, open := strings.CutPrefix(part, "{")
		name, closed := strings.CutSuffix(name, "}")
		if !open || !closed || strings.ContainsAny(name, "{}") {
			return pathMatcher{}, "segment " + quote(part) + " must be a literal or a whole {param}"
		}
		name, rest := strings.CutSuffix(name, "...")
		if !validParamName(name) {
			return pathMatcher{}, "segment " + quote(part) + ": a parameter name is a letter or _ then letters, digits or _"
		}
		if names[name] {
			return pathMatcher{}, "parameter {" + name + "} appears twice"
		}
		names[name] = true
		if rest {
			if i != len(parts)-1 {
				return pathMatcher{}, "{" + name + "...} must be the last segment"
			}
			m.rest = true
			break
		}
		m.segs = append(m.segs, segment{param: true})
	}
	literal := "/" + strings.Join(lits, "/")
	switch {
	case len(m.segs) == 0 && !m.rest: // no parameter: an exact path
		m.kind = matchExact
	case len(m.segs) == 0: // only a trailing {rest...}: a prefix
		m.kind, m.path, m.below = matchPrefix, literal, literal+"/"
		if literal == "/" {
			m.below = "/"
		}
	default:
		m.lead = strings.TrimSuffix(literal, "/") + "/"
	}
	return m, ""
}

func validParamName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		letter := c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}
