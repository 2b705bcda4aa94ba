package policy

import (
	"slices"
	"strings"

	"github.com/odin-scan/odin-authz/jwtauth"
)

// Policy is a compiled route policy: ordered rules, first match wins, and a
// default for requests no rule matches. It is immutable once built, so any
// number of goroutines may use one without locking; a reload builds a new
// Policy (see Holder).
type Policy struct {
	source string
	rules  []*Rule
	def    *Rule    // the file's default rule; nil selects the built-in default
	sum    [32]byte // SHA-256 of the file, to tell a real change from a touch
}

// builtin is the policy without a file: read for GET, HEAD and OPTIONS, write otherwise (docs/CONTRACT.md).
var builtin = &Policy{source: "built-in"}

// The built-in default rules: read for safe methods, write for the rest.
var (
	builtinRead  = &Rule{name: "built-in default", allOf: []requirement{newRequirement("read")}}
	builtinWrite = &Rule{name: "built-in default", allOf: []requirement{newRequirement("write")}}
)

// invalidPath is what Match returns for a path that is not in canonical
// form: it is denied whatever the credential.
var invalidPath = &Rule{name: "invalid path", invalid: true}

// Default returns the policy used when no file is configured (docs/CONTRACT.md, method, path and scopes):
// every route requires the scope read for GET, HEAD and OPTIONS and write
// for every other method, under the scope rules of the package comment.
func Default() *Policy { return builtin }

// Source is the file the policy was read from, or "built-in".
func (p *Policy) Source() string { return p.source }

// Len is the number of rules, not counting the default.
func (p *Policy) Len() int { return len(p.rules) }

// Match returns the rule for a request: the first rule whose methods and
// path match, else the file's default rule, else the built-in default.
// The method is compared without regard to case. The path is Envoy's :path;
// its query string is ignored, and a path that is not in canonical form
// (see the package comment) yields a rule that denies every request.
// Match never allocates for a path without percent escapes.
func (p *Policy) Match(method, path string) *Rule {
	cp, reason := canonicalPath(path)
	if reason != "" {
		return invalidPath
	}
	m := methodBit(method)
	for _, r := range p.rules {
		if r.methods&m != 0 && r.path.match(cp) {
			return r
		}
	}
	switch {
	case p.def != nil:
		return p.def
	case m&safeMethods != 0:
		return builtinRead
	default:
		return builtinWrite
	}
}

// Authorize is Match followed by Check, for a caller that already knows the
// granted scopes. A caller that must decide whether to authenticate at all
// calls Match, asks the rule whether it is Public, and calls Check after.
func (p *Policy) Authorize(method, path string, granted []string) Result {
	return p.Match(method, path).Check(granted)
}

// Rule is one compiled rule of a policy. It is immutable.
type Rule struct {
	name       string // the rule's name, "rule N" (1-based), "default" or "built-in default"
	public     bool
	invalid    bool
	methods    methodSet
	path       pathMatcher
	allOf      []requirement
	anyOf      []requirement
	anyOfNames []string
	reverify   *Reverify // nil: no step-up requirement
}

// Reverify is a rule's step-up requirement: a session token must show a
// recent verification of a factor (Clerk's fva claim), and an API key,
// which cannot re-verify, is refused unless AllowAPIKeys.
type Reverify struct {
	jwtauth.Reverification
	// AllowAPIKeys admits API keys on the route (on their scopes alone).
	AllowAPIKeys bool
}

// Reverify is the rule's step-up requirement, nil when it has none (the
// caller's scopes alone decide). It is shared and read-only.
func (r *Rule) Reverify() *Reverify { return r.reverify }

// Name is the rule's name for logs: its name in the file, "rule N" (N
// counts from 1) when it has none, "default" for the file's default,
// "built-in default", or "invalid path".
func (r *Rule) Name() string { return r.name }

// Public reports whether the route needs no credential at all.
func (r *Rule) Public() bool { return r.public }

// Check says whether a caller holding the granted scopes may pass the rule.
// It does not allocate when the caller may pass.
func (r *Rule) Check(granted []string) Result {
	res := Result{Rule: r.name, Public: r.public, Invalid: r.invalid}
	if r.public || r.invalid {
		return res
	}
	for i := range r.allOf {
		if !r.allOf[i].satisfied(granted) {
			res.Missing = append(res.Missing, r.allOf[i].name)
		}
	}
	if len(r.anyOf) == 0 {
		return res
	}
	for i := range r.anyOf {
		if r.anyOf[i].satisfied(granted) {
			return res
		}
	}
	res.MissingAnyOf = slices.Clone(r.anyOfNames)
	return res
}

// Result is the answer of a rule for one caller.
type Result struct {
	// Rule names the rule that decided, for logs (see Rule.Name).
	Rule string
	// Public is true when the route needs no credential.
	Public bool
	// Invalid is true when the request path is not in canonical form: the
	// request is denied whatever the credential.
	Invalid bool
	// Missing lists the all_of scopes the caller lacks.
	Missing []string
	// MissingAnyOf lists the any_of scopes when the caller holds none of
	// them; holding any one would do.
	MissingAnyOf []string
}

// Allowed reports whether the request may pass. Decide with it, not with
// the length of Missing: an invalid path has nothing missing.
func (r Result) Allowed() bool {
	return !r.Invalid && len(r.Missing) == 0 && len(r.MissingAnyOf) == 0
}

// Message is a short text for the 403 body: the missing scope(s), which
// granted scopes would satisfy each, and the rule that asked for them;
// empty when the request is allowed. It holds scope and rule names from the
// policy, never anything from the request.
func (r Result) Message() string {
	var parts []string
	switch {
	case r.Invalid:
		return "Request path is not in canonical form"
	case len(r.Missing) == 1:
		parts = append(parts, "missing scope "+r.Missing[0]+" (granted by "+grantedByText(r.Missing[0])+")")
	case len(r.Missing) > 1:
		each := make([]string, len(r.Missing))
		for i, m := range r.Missing {
			each[i] = m + " (granted by " + grantedByText(m) + ")"
		}
		parts = append(parts, "missing scopes "+strings.Join(each, ", "))
	}
	if len(r.MissingAnyOf) > 0 {
		parts = append(parts, "needs one of the scopes "+strings.Join(r.MissingAnyOf, ", "))
	}
	if len(parts) == 0 {
		return ""
	}
	msg := "Insufficient permissions: " + strings.Join(parts, "; ")
	if r.Rule != "" {
		msg += `; rule "` + r.Rule + `"`
	}
	return msg
}

// methodSet is a set of HTTP methods, one bit each.
type methodSet uint16

// methodNames are the methods a policy file may name, in bit order.
var methodNames = [...]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}

const (
	// otherMethod is the bit of every method not in methodNames: only a
	// rule for any method matches it, and the built-in default treats it
	// as a write.
	otherMethod methodSet = 1 << 15
	anyMethod   methodSet = 1<<16 - 1
	safeMethods methodSet = 1<<0 | 1<<1 | 1<<6 // GET, HEAD, OPTIONS
)

// methodBit returns the bit of a request method, without regard to case.
func methodBit(m string) methodSet {
	for i, name := range methodNames {
		if len(m) == len(name) && strings.EqualFold(m, name) {
			return 1 << i
		}
	}
	return otherMethod
}
