package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/odin-scan/odin-authz/internal/loadtest"
)

// runCapacity is `odin-load capacity`: the capacity model fed with one or
// more odin-load JSON reports.
func runCapacity(_ context.Context, args []string, stdout, stderr io.Writer) error {
	in := loadtest.DefaultCapacityInputs()
	over := loadtest.DefaultCapacityInputs()
	var reports []string
	var concurrency int
	var mdPath, jsonPath string
	fs := flag.NewFlagSet("capacity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: odin-load capacity --report run.json [--report more.json] [flags]\n\n"+
			"Sizes a deployment for the target rates from the per-path costs odin-load measured:\n"+
			"replicas and cores, the LRU and Redis hit ratios, Redis and PostgreSQL load, memory per\n"+
			"replica and the cost of a revocation's fan-out. Writes the plan as Markdown (stdout, or\n"+
			"--markdown, e.g. docs/CAPACITY.md) and JSON (--json). Every measured input can be\n"+
			"overridden by its flag; the plan says where each value came from.\n\nFlags:")
		fs.PrintDefaults()
	}
	fs.Func("report", "odin-load JSON report to take the measured costs from (repeatable; figures are pooled)", func(s string) error {
		reports = append(reports, s)
		return nil
	})
	fs.IntVar(&concurrency, "concurrency", 0, "use the reports' results at this concurrency (0: each scenario's highest)")
	fs.Func("rps", "target rates, checks per second, comma-separated (default 100000,1000000)", func(s string) error {
		var rates []float64
		for _, part := range splitList(s) {
			v, err := strconv.ParseFloat(part, 64)
			if err != nil || v <= 0 {
				return fmt.Errorf("%q: want a positive number", part)
			}
			rates = append(rates, v)
		}
		if len(rates) == 0 {
			return errors.New("empty list")
		}
		over.Rates = rates
		return nil
	})
	for _, f := range over.Fields() {
		usage := f.Usage
		if f.Measured {
			usage += " (default: from the reports)"
		}
		fs.Float64Var(f.Ptr, f.Flag, *f.Ptr, usage)
	}
	fs.StringVar(&mdPath, "markdown", "", "write the Markdown plan here instead of stdout (e.g. docs/CAPACITY.md)")
	fs.StringVar(&jsonPath, "json", "", "write the JSON plan here too")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("capacity: unexpected argument %q", fs.Arg(0))
	}

	var named []loadtest.NamedReport
	var machines, runs []string
	for _, path := range reports {
		rep, err := readReport(path)
		if err != nil {
			return err
		}
		name := filepath.Base(path)
		named = append(named, loadtest.NamedReport{Name: name, Report: rep})
		machines = append(machines, describeReport(name, rep))
		if len(rep.Results) > 0 {
			runs = append(runs, runCommand(name, rep))
		}
	}
	notes := loadtest.CapacityInputsFromReports(&in, named, concurrency)
	// Flags given on the command line win over the reports.
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "rps" {
			in.Rates = over.Rates
			in.Sources["rps"] = "set: --rps"
			return
		}
		for i, field := range over.Fields() {
			if field.Flag == f.Name {
				*in.Fields()[i].Ptr = *field.Ptr
				in.Sources[f.Name] = "set: --" + f.Name
			}
		}
	})
	plan, err := loadtest.PlanCapacity(in)
	if err != nil {
		return fmt.Errorf("capacity: %w", err)
	}
	plan.Notes = notes
	plan.Reports = reports
	plan.Machine = machines
	plan.Command = regenerateCommand(args)
	plan.RunCommands = runs

	if jsonPath != "" {
		if err := writeFile(jsonPath, plan.WriteJSON); err != nil {
			return err
		}
	}
	if mdPath != "" {
		return writeFile(mdPath, plan.WriteMarkdown)
	}
	return plan.WriteMarkdown(stdout)
}

func readReport(path string) (*loadtest.Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	var rep loadtest.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("read report %s: %w", path, err)
	}
	if len(rep.Results) == 0 && len(rep.RSS) == 0 {
		return nil, fmt.Errorf("report %s has no results", path)
	}
	return &rep, nil
}

// describeReport says where and under what load a report was measured.
func describeReport(name string, r *loadtest.Report) string {
	lo, hi := 0.0, 0.0
	first := true
	for _, res := range r.Results {
		for _, la := range append(append([]string(nil), res.Odin.LoadAvg...), res.Baseline.LoadAvg...) {
			f, err := strconv.ParseFloat(strings.Fields(la + " x")[0], 64)
			if err != nil {
				continue
			}
			if first || f < lo {
				lo = f
			}
			if first || f > hi {
				hi = f
			}
			first = false
		}
	}
	s := fmt.Sprintf("`%s`: %s, %d CPUs (%s), %s; load average %s at the start", name, r.Started.Format("2006-01-02 15:04 MST"),
		r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion, r.Machine.LoadAvgStart)
	if !first {
		s += fmt.Sprintf(", %.1f–%.1f (1 min) during the runs", lo, hi)
	}
	return s + "."
}

// runCommand is the odin-load run command line that produces a report like r.
func runCommand(name string, r *loadtest.Report) string {
	s := r.Settings
	parts := []string{"odin-load run --odin-bin ./odin", "--keys " + strconv.Itoa(s.Keys)}
	if len(s.Scenarios) > 0 {
		parts = append(parts, "--scenarios "+strings.Join(s.Scenarios, ","))
	}
	conc := make([]string, len(s.Concurrency))
	for i, c := range s.Concurrency {
		conc[i] = strconv.Itoa(c)
	}
	parts = append(parts, "--concurrency "+strings.Join(conc, ","), "--rounds "+strconv.Itoa(s.Rounds), "--duration "+s.RunDuration)
	if s.Rate > 0 {
		parts = append(parts, "--rate "+strconv.FormatFloat(s.Rate, 'g', -1, 64))
	}
	if len(r.Bursts) == 0 {
		parts = append(parts, "--burst 0")
	}
	for _, p := range r.RSS {
		parts = append(parts, "--rss-keys "+strconv.Itoa(p.Keys))
	}
	return strings.Join(append(parts, "--max-time 15m", "--json "+name), " ")
}

// regenerateCommand is the capacity command line, with the reports by
// their base names.
func regenerateCommand(args []string) string {
	out := []string{"odin-load capacity"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case name == "report" || name == "markdown" || name == "json":
			if !hasVal && i+1 < len(args) {
				i++
				val = args[i]
			}
			if name == "report" {
				val = filepath.Base(val)
			}
			out = append(out, "--"+name+" "+val)
		default:
			out = append(out, a)
		}
	}
	return strings.Join(out, " ")
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
