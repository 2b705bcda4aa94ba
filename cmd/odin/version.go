package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/odin-scan/odin-authz/internal/buildinfo"
)

// runVersion prints which build this is: module version, VCS revision and
// time, Go version and platform.
// versionFlagSet defines odin version's flags, writing to asJSON.
func versionFlagSet(asJSON *bool) *flags {
	f := newFlags("version", "Print the build: module version, VCS revision and commit time, Go version.")
	f.Bool(asJSON, "json", "", false, "print JSON")
	return f
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	var asJSON bool
	f, err := parseFlags(&asJSON, versionFlagSet, args, stderr)
	if err != nil {
		return err
	}
	if len(f.positional) > 0 {
		return fmt.Errorf("version takes no arguments, got %q", f.positional[0])
	}
	in := buildinfo.Read()
	if asJSON {
		return json.NewEncoder(stdout).Encode(in)
	}
	_, err = fmt.Fprint(stdout, in.String())
	return err
}
