// Package policy maps a request's method and path to the scopes it needs
// and says whether a caller's scopes satisfy them: a YAML file of ordered
// rules (first match wins, exact path, prefix or pattern, all_of/any_of
// scopes or public), a default rule, the scope-satisfaction rules
// (wildcards, write implies read) and the one canonical form of a path that
// rules match against, refusing paths servers could read in more than one
// way. A Holder keeps the policy in force and reloads it. The file format
// and every rule are in docs/POLICY.md.
package policy
