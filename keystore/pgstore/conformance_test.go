package pgstore_test

import (
	"testing"

	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/storetest"
)

// TestConformance runs the store conformance suite, each test on a fresh
// database cloned from the migrated template.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keystore.Store { return open(t) })
}
