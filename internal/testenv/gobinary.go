package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// GoBinary is the go command running this test: GOROOT from the go command
// itself ("go env GOROOT"), else whatever "go" is on PATH.
func GoBinary() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if p := filepath.Join(strings.TrimSpace(string(out)), "bin", "go"); p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	return "go"
}
