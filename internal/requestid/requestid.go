// Package requestid is the one rule for the correlation id of a request,
// shared by odin authz (the decision's requestId) and odin admin (its
// answers and the audit log): a client's X-Request-Id is taken as it is
// when it is sane, else a fresh req-<random> stands in for it.
package requestid

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/odin-scan/odin-authz/credential"
)

// MaxLen bounds an id taken from a client: longer ones are replaced.
const MaxLen = 128

// Valid reports whether id may be used as it is: 1 to MaxLen bytes of
// printable ASCII without spaces (a credential's alphabet,
// credential.CheckPrintable). That keeps ids safe to echo in a header, store
// in the audit log (valid UTF-8, no control characters) and log.
func Valid(id string) bool {
	return len(id) <= MaxLen && credential.CheckPrintable(id) == ""
}

// FromHeader returns the client's id when it is Valid, else a New one.
func FromHeader(v string) string {
	if Valid(v) {
		return v
	}
	return New()
}

// New returns a fresh req-<24 hex digits>.
func New() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return "req-" + hex.EncodeToString(b[:])
}
