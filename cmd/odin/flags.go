package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// flags is a flag set whose every flag falls back to an ODIN_* environment
// variable, named in its -h line. Flags win over the environment.
//
// Every flag is defined through its methods, which also record it in docs
// for the configuration reference (odin config-reference).
type flags struct {
	*flag.FlagSet
	envErrs    []error
	positional []string
	docs       []flagDoc
}

// flagDoc is one flag as the configuration reference shows it.
type flagDoc struct {
	name, env string
	// def is the default the flag declares, before any ODIN_* value
	// replaces it; "" when it has none.
	def    string
	secret bool // def is "" and no value is ever shown
	usage  string
}

func newFlags(name, summary string) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: odin %s\n\n%s\n\nFlags (each also read from the environment variable shown):\n", name, summary)
		fs.PrintDefaults()
	}
	return &flags{FlagSet: fs}
}

func (f *flags) document(name, env, def, usage string) {
	f.docs = append(f.docs, flagDoc{name: name, env: env, def: def, usage: usage})
}

// formatDuration is d as a person writes it: 24h, not 24h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (f *flags) env(env string) (string, bool) {
	if env == "" {
		return "", false
	}
	v, ok := os.LookupEnv(env)
	return v, ok && v != ""
}

func envNote(usage, env string) string {
	if env == "" {
		return usage
	}
	return usage + " [" + env + "]"
}

func (f *flags) String(p *string, name, env, def, usage string) {
	f.document(name, env, def, usage)
	if v, ok := f.env(env); ok {
		def = v
	}
	f.StringVar(p, name, def, envNote(usage, env))
}

// Secret is a string flag whose value -h never prints.
func (f *flags) Secret(p *string, name, env, usage string) {
	f.docs = append(f.docs, flagDoc{name: name, env: env, secret: true, usage: usage})
	def := ""
	if v, ok := f.env(env); ok {
		def = v
	}
	*p = def
	f.Func(name, envNote(usage+" (secret: not shown)", env), func(s string) error { *p = s; return nil })
}

func (f *flags) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	f.document(name, env, formatDuration(def), usage)
	if v, ok := f.env(env); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q: not a duration (e.g. 30s, 5m)", env, v))
		} else {
			def = d
		}
	}
	f.DurationVar(p, name, def, envNote(usage, env))
}

func (f *flags) Int(p *int, name, env string, def int, usage string) {
	f.document(name, env, strconv.Itoa(def), usage)
	if v, ok := f.env(env); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q: not an integer", env, v))
		} else {
			def = n
		}
	}
	f.IntVar(p, name, def, envNote(usage, env))
}

func (f *flags) Float64(p *float64, name, env string, def float64, usage string) {
	f.document(name, env, strconv.FormatFloat(def, 'g', -1, 64), usage)
	if v, ok := f.env(env); ok {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q: not a number", env, v))
		} else {
			def = n
		}
	}
	f.Float64Var(p, name, def, envNote(usage, env))
}

func (f *flags) Bool(p *bool, name, env string, def bool, usage string) {
	f.document(name, env, strconv.FormatBool(def), usage)
	if v, ok := f.env(env); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Errorf("%s=%q: not a boolean", env, v))
		} else {
			def = b
		}
	}
	f.BoolVar(p, name, def, envNote(usage, env))
}

// List is a comma-separated list flag. Its default is *p as given.
func (f *flags) List(p *[]string, name, env, usage string) {
	f.document(name, env, strings.Join(*p, ","), usage+" (comma-separated)")
	if v, ok := f.env(env); ok {
		*p = splitList(v)
	}
	f.Func(name, envNote(usage+" (comma-separated)", env), func(s string) error { *p = splitList(s); return nil })
}

// Repeated is a flag that may be given several times, each value passed
// to add. It has no environment variable.
func (f *flags) Repeated(name, usage string, add func(string) error) {
	f.document(name, "", "", usage)
	f.Func(name, usage, add)
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// parse parses args, flags and positional arguments in any order (`odin
// keys revoke key_1 --json` works as well as `--json key_1`), and reports bad
// environment values as errors. Positional arguments are in f.positional.
func (f *flags) parse(args []string) error {
	for {
		if err := f.Parse(args); err != nil {
			return err
		}
		rest := f.Args()
		if len(rest) == 0 {
			break
		}
		f.positional = append(f.positional, rest[0])
		args = rest[1:]
	}
	if len(f.envErrs) > 0 {
		return f.envErrs[0]
	}
	return nil
}

// isSet reports whether the command line gave flag name (even with an
// empty value), as opposed to its default.
func (f *flags) isSet(name string) bool {
	set := false
	f.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	return set
}

// noArgs refuses positional arguments, for a command that takes none.
func (f *flags) noArgs() error {
	if len(f.positional) > 0 {
		return fmt.Errorf("%s: unexpected argument %q", f.Name(), f.positional[0])
	}
	return nil
}

// parseNoArgs parses args for a command that takes no positional
// arguments.
func (f *flags) parseNoArgs(args []string) error {
	if err := f.parse(args); err != nil {
		return err
	}
	return f.noArgs()
}

// parseFlags defines a command's flags on c with flagSet, parses args into
// c and returns the flag set, with its positional arguments. Usage and
// errors go to stderr.
func parseFlags[C any](c *C, flagSet func(*C) *flags, args []string, stderr io.Writer) (*flags, error) {
	f := flagSet(c)
	f.SetOutput(stderr)
	return f, f.parse(args)
}
