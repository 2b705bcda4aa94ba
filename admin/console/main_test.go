package console_test

import (
	"os"
	"testing"

	"github.com/odin-scan/odin-authz/internal/testenv"
)

// TestMain drops the package's template database when the tests end.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
