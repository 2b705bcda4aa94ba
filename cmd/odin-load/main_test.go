package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/odin-scan/odin-authz/internal/loadtest"
	"github.com/odin-scan/odin-authz/internal/testenv"
)

// childEnv makes the test binary behave as odin-load itself: `run` starts
// the baseline as os.Executable() baseline …, which is this binary.
const childEnv = "ODINLOAD_CMD_TEST_CHILD" // not ODIN_*: those are kept from children

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		return
	}
	os.Exit(testenv.Main(m))
}

func TestUsageAndBadInput(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string // "" with help: flag.ErrHelp
		help    bool
		stderr  string
	}{
		{name: "no command", args: nil, wantErr: "no command given", stderr: "Commands:"},
		{name: "help", args: []string{"-h"}, help: true, stderr: "baseline"},
		{name: "run help", args: []string{"run", "-h"}, help: true, stderr: "-odin-bin"},
		{name: "seed help", args: []string{"seed", "-h"}, help: true, stderr: "-keys"},
		{name: "unknown command", args: []string{"bench"}, wantErr: `unknown command "bench"`},
		{name: "bad concurrency", args: []string{"run", "--concurrency", "8,x"}, wantErr: `"x" is not a positive integer`},
		{name: "stray argument", args: []string{"run", "--odin-bin", "/bin/true", "extra"}, wantErr: `unexpected argument "extra"`},
		{name: "no odin binary", args: []string{"run", "--work-dir", "@tmp"}, wantErr: "the odin binary is required"},
		{name: "remote database", args: []string{"run", "--odin-bin", "/bin/true", "--work-dir", "@tmp", "--database-url", "postgres://db.example.com/odin"},
			wantErr: "not a loopback address"},
		{name: "remote proxy", args: []string{"run", "--odin-bin", "/bin/true", "--work-dir", "@tmp", "--proxy-url", "http://192.0.2.1:10000"},
			wantErr: "not a loopback address"},
		{name: "unknown scenario", args: []string{"run", "--odin-bin", "/bin/true", "--work-dir", "@tmp", "--scenarios", "cached-key,warp"},
			wantErr: `unknown scenario "warp"`},
		{name: "baseline bad flag", args: []string{"baseline", "--port", "1"}, wantErr: "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string(nil), tc.args...)
			for i, a := range args {
				if a == "@tmp" {
					args[i] = t.TempDir()
				}
			}
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), args, &stdout, &stderr)
			switch {
			case tc.help && !errors.Is(err, flag.ErrHelp):
				t.Errorf("err = %v, want flag.ErrHelp", err)
			case !tc.help && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("err = %v, want one containing %q", err, tc.wantErr)
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr.String())
			}
		})
	}
}

func TestParseHelpers(t *testing.T) {
	got, err := parseInts("1, 8,8,32")
	if diff := cmp.Diff([]int{1, 8, 32}, got); diff != "" || err != nil {
		t.Errorf("parseInts (-want, +got):\n%s (err %v)", diff, err)
	}
	for _, args := range [][]string{{"--long"}, {"--rounds", "1", "-long"}, {"--long=true"}} {
		if !wantsLong(args) {
			t.Errorf("wantsLong(%q) = false", args)
		}
	}
	if wantsLong([]string{"--long=false"}) || wantsLong(nil) {
		t.Error("wantsLong without --long = true")
	}
}

func TestBaselineAnswersOKAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &testenv.LogBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"baseline", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, io.Discard, logs)
	}()
	var ready struct{ GRPC, HTTP string }
	deadline := time.Now().Add(5 * time.Second)
	for ready.GRPC == "" {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			if strings.Contains(sc.Text(), "baseline serving") {
				_ = json.Unmarshal(sc.Bytes(), &ready)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("baseline not serving; logs:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient(ready.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{})
	if err != nil || resp.GetStatus().GetCode() != 0 || resp.GetOkResponse() == nil {
		t.Errorf("Check = %v, %v; want an OK answer", resp, err)
	}
	hr, err := http.Get("http://" + ready.HTTP + "/v1/scans")
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if hr.StatusCode != http.StatusOK {
		t.Errorf("HTTP status %d, want 200", hr.StatusCode)
	}
	cancel()
	testenv.WaitStopped(t, done, 10*time.Second, "baseline")
}

// TestRunCommandWritesReports runs `odin-load run` for two scenarios, a
// fraction of a second each, against odin authz built from this tree.
func TestRunCommandWritesReports(t *testing.T) {
	db := testenv.Postgres(t)
	odin := filepath.Join(t.TempDir(), "odin")
	goTool := testenv.GoBinary()
	if out, err := exec.Command(goTool, "build", "-o", odin, "github.com/odin-scan/odin-authz/cmd/odin").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/odin: %v: %s", err, out)
	}
	t.Setenv(childEnv, "1") // the baseline child is this test binary
	dir := t.TempDir()
	jsonPath, mdPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.md")
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"run", "--odin-bin", odin, "--database-url", db, "--in-place", "--redis-url", "",
		"--keys", "300", "--scenarios", "cached-key,cached-key-http", "--concurrency", "2", "--rounds", "1",
		"--duration", "300ms", "--requests", "300", "--burst", "20", "--work-dir", dir,
		"--json", jsonPath, "--markdown", mdPath}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "| cached-key-http | 2 | odin |") {
		t.Errorf("stdout lacks the odin row of cached-key-http:\n%s", stdout.String())
	}
	md, err := os.ReadFile(mdPath)
	if err != nil || !bytes.Equal(md, stdout.Bytes()) {
		t.Errorf("--markdown file differs from stdout (err %v)", err)
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep loadtest.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("JSON report: %v", err)
	}
	if len(rep.Results) != 2 || rep.Results[0].Odin.RPS <= 0 || rep.Results[1].Baseline.RPS <= 0 {
		t.Errorf("JSON report results: %s", fmt.Sprint(rep.Results))
	}
}
