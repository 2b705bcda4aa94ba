package console

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// The vendored files are the ones static/vendor/README.md records.
func TestVendoredChecksums(t *testing.T) {
	readme, err := os.ReadFile("static/vendor/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css"} {
		b, err := staticFS.ReadFile("static/vendor/" + name)
		if err != nil {
			t.Fatalf("%s is not embedded: %v", name, err)
		}
		sum := sha256.Sum256(b)
		if !strings.Contains(string(readme), "`"+hex.EncodeToString(sum[:])+"`") {
			t.Errorf("%s: SHA-256 %x is not the one static/vendor/README.md records", name, sum)
		}
	}
	for _, name := range []string{"htmx.LICENSE", "uPlot.LICENSE"} {
		if _, err := staticFS.ReadFile("static/vendor/" + name); err != nil {
			t.Errorf("the licence %s is not there: %v", name, err)
		}
	}
}
