package testenv

import "runtime/debug"

// RaceEnabled reports whether the test binary was built with -race, so a
// test that builds a binary of its own can build it the same way and have
// the child's data races caught too.
func RaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}
