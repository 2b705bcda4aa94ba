// Package policy maps a request's method and path to the scopes it needs
// (docs/CONTRACT.md, "Method and path") and says whether a caller's scopes satisfy them.
//
// # Policy file
//
// The file (ODIN_POLICY_FILE) is YAML: an ordered list of rules, first match
// wins, and an optional default rule for requests no rule matches:
//
//	rules:
//	  - name: health              # optional; logs say "rule N" without it
//	    path: /healthz            # exact path
//	    public: true              # no credential needed
//	  - name: scans read
//	    methods: [GET, HEAD]      # absent, [] or ["*"]: any method
//	    prefix: /v1/scans         # /v1/scans and everything below it
//	    scopes: {all_of: [scans:read]}
//	  - pattern: /v1/scans/{id}/results   # {id}: exactly one non-empty segment
//	    scopes: {any_of: [scans:read, reports:read]}
//	  - pattern: /v1/files/{rest...}      # {name...} last: zero or more segments
//	    scopes: {all_of: [files:read]}
//	default:
//	  scopes: {all_of: [admin]}
//
// A rule has exactly one of path, prefix or pattern, and either scopes
// (all_of: every one; any_of: at least one; both lists may be given) or
// public: true. Without a default the built-in one applies: read for GET,
// HEAD and OPTIONS, write for every other method. Unknown fields, unknown
// methods and non-canonical paths are errors that name the file, line and
// rule, and a file with any error is refused whole.
//
// # Scopes
//
// A required scope is satisfied by a granted scope when
//   - they are equal;
//   - the granted scope is "*", which grants everything;
//   - the granted scope is "<prefix>:*", which grants every scope that starts
//     with "<prefix>:" (scans:* grants scans:read and scans:write, not scans);
//   - write implies read: a granted "<resource>:write" satisfies a required
//     "<resource>:read", and a granted "write" a required "read";
//   - the required scope is the generic "read" of the default policy, and the
//     granted scope gives read access to some resource: read, write,
//     <resource>:read, <resource>:write or <resource>:*. Likewise "write" is
//     satisfied by write, <resource>:write or <resource>:*.
//
// So a key with scans:read passes GET /v1/scans under the built-in default
// and is refused POST /v1/scans (403, "missing scope write"). The default
// policy knows no resources: under it a key with billing:read may read
// /v1/scans too. List the routes in a policy file to tell resources apart.
// A wildcard only means something at the end of a granted scope; a required
// scope never contains one. A granted read or write is not a wildcard over
// resources: it does not satisfy scans:read.
//
// # Paths
//
// Rules are matched against one canonical form of the path, and a path that
// servers could read in more than one way is refused rather than guessed at,
// because the server behind the proxy, not this package, decides which
// resource a path names. Matching:
//   - the query string (from the first "?") is ignored;
//   - percent escapes are decoded once (/v1/%61dmin is /v1/admin);
//   - a trailing slash is ignored (/v1/admin/ is /v1/admin);
//   - paths are case-sensitive (/V1/ADMIN is not /v1/admin); methods are not.
//
// Refused (Match returns a rule whose Check is never Allowed):
//   - a path that does not start with "/";
//   - a "." or ".." segment (/v1/public/../admin): a client resolves these
//     before sending, and an upstream that does not would disagree with one
//     that does;
//   - an empty segment (//v1/admin, /v1//admin), except a trailing slash;
//   - a backslash, a ";" (Servlet containers strip ";params", so
//     /v1/public/..;/admin is /v1/admin to them), or a "#";
//   - an encoded "/", "\", ".", ";" or "%" (%2F, %5C, %2E, %3B, %25): an
//     encoded slash must never split a segment for one server and not
//     another, and %25 is how double-decoding attacks start;
//   - a malformed escape, a raw space, control or non-ASCII byte, an encoded
//     control character, or escapes that decode to invalid UTF-8.
//
// These follow Spring Security's StrictHttpFirewall defaults; clients resolve
// dot segments before sending, so legitimate traffic is not affected. Configure Envoy with normalize_path
// and merge_slashes so that sloppy but harmless paths are cleaned before they
// reach both this server and the upstream, the same way.
//
// Because paths are case-sensitive and first match wins, a path no rule
// lists gets the default. Make the default at least as strict as any rule
// (for example admin) when the upstream treats paths case-insensitively or
// has routes the policy does not list.
//
// # Reloading
//
// A Holder keeps the policy in force for concurrent readers and reloads it
// on SIGHUP, on a file change (seen by polling, see Holder.Watch) or when
// asked; a bad file leaves the previous policy in force.
package policy
