// Package denialtest holds test data of the error bodies: Clerk's
// reverification hint as Clerk's SDK writes it, for the tests of every
// service that sends one.
package denialtest

import (
	_ "embed"
	"encoding/json"
	"testing"
)

// clerkReverificationError is what reverificationError({level:
// 'second_factor', afterMinutes: 10}) returns in Clerk's SDK
// (github.com/clerk/javascript, packages/shared/src/authorization-errors.ts
// at commit e21ae9a4cf189ed20cb04bee94497533cd9d4dbe), written out by hand.
//
//go:embed testdata/clerk_reverification_error.json
var clerkReverificationError []byte

// ClerkHint returns the clerk_error object of Clerk's reverification hint
// for level and afterMinutes, decoded as encoding/json decodes any JSON
// (numbers are float64), to compare with a decoded body.
func ClerkHint(t testing.TB, level string, afterMinutes int) map[string]any {
	t.Helper()
	var fixture map[string]any
	if err := json.Unmarshal(clerkReverificationError, &fixture); err != nil {
		t.Fatal(err)
	}
	hint := fixture["clerk_error"].(map[string]any)
	rv := hint["metadata"].(map[string]any)["reverification"].(map[string]any)
	rv["level"], rv["afterMinutes"] = level, float64(afterMinutes)
	return hint
}
