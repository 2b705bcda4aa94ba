package policy

import (
	"regexp"
	"strings"
)

// requiredScopePattern is the shape of a scope a rule may require: the
// keystore's scope alphabet without the wildcard, which only means
// something in a granted scope.
var requiredScopePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.:-]{0,63}$`)

// verb marks the two generic scopes of the default policy.
type verb uint8

const (
	verbNone verb = iota
	verbRead
	verbWrite
)

// requirement is one required scope, compiled so that checking it against
// a granted scope is a few string comparisons.
type requirement struct {
	name string
	verb verb // verbRead or verbWrite when name is exactly "read" or "write"
	// impliedBy is "<resource>:write" when name is "<resource>:read":
	// write access implies read access.
	impliedBy string
}

func newRequirement(name string) requirement {
	q := requirement{name: name}
	switch name {
	case "read":
		q.verb = verbRead
	case "write":
		q.verb = verbWrite
	default:
		if res, ok := strings.CutSuffix(name, ":read"); ok && res != "" {
			q.impliedBy = res + ":write"
		}
	}
	return q
}

// grantedBy reports whether the granted scope g satisfies q. The rules are
// those of the package comment; none of them allocates.
func (q *requirement) grantedBy(g string) bool {
	if g == q.name || g == "*" {
		return true
	}
	switch q.verb {
	case verbRead:
		return g == "write" || hasResource(g, ":read") || hasResource(g, ":write") || hasResource(g, ":*")
	case verbWrite:
		return hasResource(g, ":write") || hasResource(g, ":*")
	}
	if q.impliedBy != "" && g == q.impliedBy {
		return true
	}
	// "scans:*" grants every scope that starts with "scans:".
	return hasResource(g, ":*") && len(q.name) > len(g)-1 && q.name[:len(g)-1] == g[:len(g)-1]
}

// hasResource reports whether g is "<resource><suffix>" with a non-empty
// resource.
func hasResource(g, suffix string) bool {
	return len(g) > len(suffix) && g[len(g)-len(suffix):] == suffix
}

// grantedByText says which granted scopes satisfy the scope named q, for a
// 403 message: "scans:write, scans:* or *". It follows grantedBy.
func grantedByText(q string) string {
	var alts []string
	switch q {
	case "read":
		alts = []string{"read", "write", "<resource>:read", "<resource>:write", "<resource>:*"}
	case "write":
		alts = []string{"write", "<resource>:write", "<resource>:*"}
	default:
		alts = append(alts, q)
		if res, ok := strings.CutSuffix(q, ":read"); ok && res != "" {
			alts = append(alts, res+":write")
		}
		for i := len(q) - 1; i > 0; i-- { // "a:b:c" is granted by a:b:* and a:*
			if q[i] == ':' && i < len(q)-1 {
				alts = append(alts, q[:i+1]+"*")
			}
		}
	}
	return strings.Join(alts, ", ") + " or *"
}

// satisfied reports whether any granted scope satisfies q.
func (q *requirement) satisfied(granted []string) bool {
	for _, g := range granted {
		if q.grantedBy(g) {
			return true
		}
	}
	return false
}
