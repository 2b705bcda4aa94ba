package jwtauth

import (
	"os"
	"testing"

	"github.com/odin-scan/odin-authz/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
