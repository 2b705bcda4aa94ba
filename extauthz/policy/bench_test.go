package policy

import (
	"fmt"
	"strings"
	"testing"
)

// fiftyRules is a 50-rule policy in the shape of a real API: for each of
// ten resources, a collection read, an item read by pattern, a nested
// pattern, a write rule and an any-method prefix.
func fiftyRules(tb testing.TB) *Policy {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range 10 {
		res := fmt.Sprintf("res%d", i)
		fmt.Fprintf(&b, "  - {methods: [GET, HEAD], path: /v1/%[1]s, scopes: {all_of: [%[1]s:read]}}\n", res)
		fmt.Fprintf(&b, "  - {methods: [GET], pattern: '/v1/%[1]s/{id}', scopes: {all_of: [%[1]s:read]}}\n", res)
		fmt.Fprintf(&b, "  - {methods: [GET], pattern: '/v1/%[1]s/{id}/items/{item}', scopes: {any_of: [%[1]s:read, admin]}}\n", res)
		fmt.Fprintf(&b, "  - {methods: [POST, PUT, DELETE], prefix: /v1/%[1]s, scopes: {all_of: [%[1]s:write]}}\n", res)
		fmt.Fprintf(&b, "  - {prefix: /v1/%[1]s/admin, scopes: {all_of: [admin, %[1]s:write]}}\n", res)
	}
	b.WriteString("default: {scopes: {all_of: [admin]}}\n")
	p, err := Parse([]byte(b.String()), "bench")
	if err != nil {
		tb.Fatal(err)
	}
	if p.Len() != 50 {
		tb.Fatalf("%d rules", p.Len())
	}
	return p
}

// BenchmarkAuthorize measures Match and Check for an allowed request with
// a 50-rule policy: a rule near the top, the last rules, the default, and
// the built-in default policy.
func BenchmarkAuthorize(b *testing.B) {
	p := fiftyRules(b)
	granted := []string{"res0:read", "res9:read", "res9:write", "admin"}
	for _, bc := range []struct {
		name, method, path string
		p                  *Policy
	}{
		{"rule 2", "GET", "/v1/res0/42?fields=id", p},
		{"rule 48", "PUT", "/v1/res9/42", p},
		{"rule 50", "DELETE", "/v1/res9/admin/x", p},
		{"default", "GET", "/v1/other/path", p},
		{"percent-encoded", "GET", "/v1/res9/a%20b/items/1", p},
		{"built-in", "GET", "/v1/scans/42", Default()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !bc.p.Authorize(bc.method, bc.path, granted).Allowed() {
					b.Fatal("denied")
				}
			}
		})
	}
}
