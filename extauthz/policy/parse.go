package policy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/odin-scan/odin-authz/jwtauth"
)

// Bounds on a policy file. They are far above any real policy and keep a
// broken or hostile file from costing much to reject.
const (
	maxFileSize = 1 << 20
	maxRules    = 10_000
	maxScopes   = 64 // per list, as for a key
	maxNameLen  = 100
)

// Load reads and parses a policy file. Errors name the file and, for a
// parse error, the line and rule (see Parse).
func Load(path string) (*Policy, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// readFile reads a policy file, refusing one above maxFileSize.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read policy %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("read policy %s: larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}

// Parse compiles a policy file. source names the file in errors. Every
// error says where, as "source:line: rule N "name": field: problem", for
// example:
//
//	policy.yaml:14: rule 3 "scans write": methods: unknown method "FETCH"
//
// Unknown fields, duplicate fields, a rule with no path matcher or with more
// than one, a rule with both public: true and scopes or with neither, and a
// path that is not canonical are all errors: a policy is refused whole
// rather than half applied.
func Parse(data []byte, source string) (*Policy, error) {
	if source == "" {
		source = "policy"
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", source, maxFileSize)
	}
	root, err := decodeDocument(data, source)
	if err != nil {
		return nil, err
	}
	ps := &parser{source: source}
	if root.Kind != yaml.MappingNode {
		return nil, ps.errf(root, "the policy must be a mapping with rules and default")
	}
	fields, err := ps.fields(root, "rules", "default")
	if err != nil {
		return nil, err
	}
	p := &Policy{source: source, sum: sha256.Sum256(data)}
	if n := fields["rules"]; n != nil {
		if p.rules, err = ps.rules(n); err != nil {
			return nil, err
		}
	}
	if n := fields["default"]; n != nil {
		ps.where = "default"
		if p.def, err = ps.defaultRule(n); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// decodeDocument returns the root node of the only YAML document in data.
// A trailing "---" with nothing after it is not a second document.
func decodeDocument(data []byte, source string) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root *yaml.Node
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// The YAML library's message, line included, as it gives it.
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if len(doc.Content) != 1 || isNull(resolve(doc.Content[0])) {
			continue
		}
		if root != nil {
			return nil, fmt.Errorf("%s:%d: only one YAML document is allowed", source, doc.Line)
		}
		root = resolve(doc.Content[0])
	}
	if root == nil {
		return nil, fmt.Errorf("%s: the policy is empty", source)
	}
	return root, nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// parser carries where it is in the file, for error messages.
type parser struct {
	source string
	where  string // `rule 3 "name"`, "rule 3" or "default"; "" at the top
}

func (ps *parser) errf(n *yaml.Node, format string, args ...any) error {
	prefix := fmt.Sprintf("%s:%d: ", ps.source, n.Line)
	if ps.where != "" {
		prefix += ps.where + ": "
	}
	return errors.New(prefix + fmt.Sprintf(format, args...))
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 8; i++ {
		n = n.Alias
	}
	return n
}

// fields returns the values of a mapping by key, refusing keys not in
// allowed, repeated keys and keys that are not plain strings.
func (ps *parser) fields(n *yaml.Node, allowed ...string) (map[string]*yaml.Node, error) {
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := resolve(n.Content[i])
		if k.Kind != yaml.ScalarNode {
			return nil, ps.errf(k, "a field name must be a string")
		}
		if !slices.Contains(allowed, k.Value) {
			return nil, ps.errf(k, "unknown field %s (allowed: %s)", quote(k.Value), strings.Join(allowed, ", "))
		}
		if out[k.Value] != nil {
			return nil, ps.errf(k, "duplicate field %s", quote(k.Value))
		}
		out[k.Value] = resolve(n.Content[i+1])
	}
	return out, nil
}

// rules compiles the rules list.
func (ps *parser) rules(n *yaml.Node) ([]*Rule, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, ps.errf(n, "rules must be a list")
	}
	if len(n.Content) > maxRules {
		return nil, ps.errf(n, "more than %d rules", maxRules)
	}
	rules := make([]*Rule, 0, len(n.Content))
	names := map[string]int{}
	for i, item := range n.Content {
		item = resolve(item)
		label := "rule " + strconv.Itoa(i+1)
		ps.where = label
		if item.Kind != yaml.MappingNode {
			return nil, ps.errf(item, "a rule must be a mapping")
		}
		name, err := ps.ruleName(item)
		if err != nil {
			return nil, err
		}
		if name != "" {
			ps.where = label + " " + quote(name)
			if prev, dup := names[name]; dup {
				return nil, ps.errf(item, "name is already used by rule %d", prev)
			}
			names[name] = i + 1
			label = name
		}
		r, err := ps.rule(item, label)
		if err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	ps.where = ""
	return rules, nil
}

// ruleName finds a rule's name before its other fields are checked, so
// that every error about the rule can quote it.
func (ps *parser) ruleName(n *yaml.Node) (string, error) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := resolve(n.Content[i]); k.Kind != yaml.ScalarNode || k.Value != "name" {
			continue
		}
		v := resolve(n.Content[i+1])
		if v.Kind != yaml.ScalarNode || v.Value == "" {
			return "", ps.errf(v, "name: must be a non-empty string")
		}
		if len(v.Value) > maxNameLen || strings.IndexFunc(v.Value, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
			return "", ps.errf(v, "name: at most %d characters, no control characters", maxNameLen)
		}
		if reservedName(v.Value) {
			return "", ps.errf(v, "name: %s is reserved for the names logs give rules without one", quote(v.Value))
		}
		return v.Value, nil
	}
	return "", nil
}

// reservedName reports whether a name would read in logs like one the
// package gives: "rule N", "default", "built-in default", "invalid path".
func reservedName(name string) bool {
	switch name {
	case "default", builtinRead.name, invalidPath.name:
		return true
	}
	n, ok := strings.CutPrefix(name, "rule ")
	_, err := strconv.Atoi(n)
	return ok && err == nil
}

// rule compiles one rule of the rules list.
func (ps *parser) rule(n *yaml.Node, name string) (*Rule, error) {
	f, err := ps.fields(n, "name", "methods", "path", "prefix", "pattern", "public", "scopes", "reverify")
	if err != nil {
		return nil, err
	}
	r := &Rule{name: name}
	if r.methods, err = ps.methods(f["methods"]); err != nil {
		return nil, err
	}
	if r.path, err = ps.pathMatcher(n, f); err != nil {
		return nil, err
	}
	return r, ps.access(n, f, r)
}

// defaultRule compiles the default rule: access only, no route.
func (ps *parser) defaultRule(n *yaml.Node) (*Rule, error) {
	if n.Kind != yaml.MappingNode {
		return nil, ps.errf(n, "must be a mapping with scopes or public")
	}
	f, err := ps.fields(n, "public", "scopes", "reverify")
	if err != nil {
		return nil, err
	}
	r := &Rule{name: "default", methods: anyMethod}
	return r, ps.access(n, f, r)
}

// access compiles the public and scopes fields of a rule into r.
func (ps *parser) access(n *yaml.Node, f map[string]*yaml.Node, r *Rule) error {
	if v := f["public"]; v != nil {
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" {
			return ps.errf(v, "public: must be true or false")
		}
		r.public = strings.EqualFold(v.Value, "true")
	}
	switch v := f["scopes"]; {
	case r.public && v != nil:
		return ps.errf(v, "scopes: a public rule needs no scopes (remove public: true or scopes)")
	case r.public && f["reverify"] != nil:
		return ps.errf(f["reverify"], "reverify: a public rule has no caller to verify (remove public: true or reverify)")
	case r.public:
		return nil
	case v == nil:
		return ps.errf(n, "needs scopes or public: true")
	}
	if err := ps.scopes(f["scopes"], r); err != nil {
		return err
	}
	if v := f["reverify"]; v != nil {
		rv, err := ps.reverify(v)
		if err != nil {
			return err
		}
		r.reverify = rv
	}
	return nil
}

// reverify compiles a rule's step-up requirement: one of Clerk's presets
// (strict_mfa, strict, moderate, lax) or a mapping with level, max_age and
// optionally allow_api_keys.
func (ps *parser) reverify(n *yaml.Node) (*Reverify, error) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
		r, ok := jwtauth.ReverificationPreset(n.Value)
		if !ok {
			return nil, ps.errf(n, "reverify: unknown preset %s (strict_mfa, strict, moderate, lax, or a mapping with level and max_age)", quote(n.Value))
		}
		return &Reverify{Reverification: r}, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, ps.errf(n, "reverify: must be a mapping with level and max_age, or strict_mfa, strict, moderate or lax")
	}
	f, err := ps.fields(n, "level", "max_age", "allow_api_keys")
	if err != nil {
		return nil, err
	}
	level, age := f["level"], f["max_age"]
	switch {
	case level == nil:
		return nil, ps.errf(n, "reverify: needs level (first_factor, second_factor or multi_factor)")
	case age == nil:
		return nil, ps.errf(n, "reverify: needs max_age, such as 10m")
	case level.Kind != yaml.ScalarNode:
		return nil, ps.errf(level, "reverify: level: must be a string")
	case age.Kind != yaml.ScalarNode:
		return nil, ps.errf(age, "reverify: max_age: must be a duration, such as 10m")
	}
	l, err := jwtauth.ParseLevel(level.Value)
	if err != nil {
		return nil, ps.errf(level, "reverify: level: unknown level %s (first_factor, second_factor or multi_factor)", quote(level.Value))
	}
	d, err := time.ParseDuration(age.Value)
	if err != nil {
		return nil, ps.errf(age, "reverify: max_age: %s is not a duration, such as 10m", quote(age.Value))
	}
	rv, err := jwtauth.NewReverification(l.String(), d)
	if err != nil {
		return nil, ps.errf(age, "reverify: max_age: %s: must be a whole number of minutes from 1m to %dm", quote(age.Value), jwtauth.MaxReverifyAge/time.Minute)
	}
	r := &Reverify{Reverification: rv}
	if v := f["allow_api_keys"]; v != nil {
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" {
			return nil, ps.errf(v, "reverify: allow_api_keys: must be true or false")
		}
		r.AllowAPIKeys = strings.EqualFold(v.Value, "true")
	}
	return r, nil
}

// methods compiles the methods list; absent, empty or ["*"] is any method.
func (ps *parser) methods(n *yaml.Node) (methodSet, error) {
	if n == nil {
		return anyMethod, nil
	}
	if n.Kind != yaml.SequenceNode {
		return 0, ps.errf(n, "methods: must be a list, such as [GET, HEAD]")
	}
	if len(n.Content) == 0 {
		return anyMethod, nil
	}
	var set methodSet
	for _, item := range n.Content {
		item = resolve(item)
		if item.Kind != yaml.ScalarNode {
			return 0, ps.errf(item, "methods: a method must be a string")
		}
		if item.Value == "*" {
			if len(n.Content) != 1 {
				return 0, ps.errf(item, `methods: "*" stands alone`)
			}
			return anyMethod, nil
		}
		bit := methodBit(item.Value)
		if bit == otherMethod {
			return 0, ps.errf(item, "methods: unknown method %s", quote(item.Value))
		}
		set |= bit
	}
	return set, nil
}

// pathMatcher compiles the one path, prefix or pattern of a rule.
func (ps *parser) pathMatcher(rule *yaml.Node, f map[string]*yaml.Node) (pathMatcher, error) {
	var (
		field string
		kind  matchKind
		value *yaml.Node
	)
	for _, c := range []struct {
		field string
		kind  matchKind
	}{{"path", matchExact}, {"prefix", matchPrefix}, {"pattern", matchPattern}} {
		v := f[c.field]
		if v == nil {
			continue
		}
		if value != nil {
			return pathMatcher{}, ps.errf(v, "%s: a rule has one of path, prefix or pattern, not both %s and %s", c.field, field, c.field)
		}
		field, kind, value = c.field, c.kind, v
	}
	if value == nil {
		return pathMatcher{}, ps.errf(rule, "needs one of path, prefix or pattern")
	}
	if value.Kind != yaml.ScalarNode {
		return pathMatcher{}, ps.errf(value, "%s: must be a string", field)
	}
	m, reason := compilePath(kind, value.Value)
	if reason != "" {
		return pathMatcher{}, ps.errf(value, "%s: %s", field, reason)
	}
	return m, nil
}

// scopes compiles a scopes mapping into r.
func (ps *parser) scopes(n *yaml.Node, r *Rule) error {
	if n.Kind != yaml.MappingNode {
		return ps.errf(n, "scopes: must be a mapping with all_of and/or any_of")
	}
	f, err := ps.fields(n, "all_of", "any_of")
	if err != nil {
		return err
	}
	if r.allOf, err = ps.scopeList(f["all_of"], "all_of"); err != nil {
		return err
	}
	if r.anyOf, err = ps.scopeList(f["any_of"], "any_of"); err != nil {
		return err
	}
	if len(r.allOf)+len(r.anyOf) == 0 {
		return ps.errf(n, "scopes: all_of or any_of must list at least one scope")
	}
	for _, q := range r.anyOf {
		r.anyOfNames = append(r.anyOfNames, q.name)
	}
	return nil
}

func (ps *parser) scopeList(n *yaml.Node, field string) ([]requirement, error) {
	if n == nil {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, ps.errf(n, "scopes: %s: must be a list", field)
	}
	if len(n.Content) > maxScopes {
		return nil, ps.errf(n, "scopes: %s: more than %d scopes", field, maxScopes)
	}
	var out []requirement
	for _, item := range n.Content {
		item = resolve(item)
		switch {
		case item.Kind != yaml.ScalarNode:
			return nil, ps.errf(item, "scopes: %s: a scope must be a string", field)
		case strings.Contains(item.Value, "*"):
			return nil, ps.errf(item, "scopes: %s: %s: a wildcard can only be granted, not required", field, quote(item.Value))
		case !requiredScopePattern.MatchString(item.Value):
			return nil, ps.errf(item, "scopes: %s: invalid scope %s (lowercase letters, digits and _ . : -, at most 64)", field, quote(item.Value))
		}
		out = append(out, newRequirement(item.Value))
	}
	return out, nil
}

func quote(s string) string { return strconv.Quote(s) }
