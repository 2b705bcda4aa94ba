// Package dev tries the README's quick start as a new user would: it builds
// the odin binary from this checkout, runs `odin dev` on a temporary data
// directory, runs the banner's example commands (their Go equivalents, and
// the lines themselves when curl and grpcurl are installed), stops it with
// SIGINT and starts it again on the same data.
//
// It needs neither PostgreSQL nor Redis: odin dev's store is embedded.
package dev

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/testenv"
)

func TestQuickStart(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("stops odin dev with SIGINT")
	}
	tmp := t.TempDir()
	bin := buildOdin(t, tmp)
	checkVersion(t, bin)
	data := filepath.Join(tmp, "data")

	d := startDev(t, bin, data)
	for _, name := range []string{"operator-token", "demo-key", "odin.db"} {
		fi, err := os.Stat(filepath.Join(data, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want a file of mode 0600", name, err)
		}
	}

	// The banner's forward-auth lines.
	d.wantHTTP(t, "GET", "api-key", d.key, 200)
	d.wantHTTP(t, "GET", "", "", 401)
	d.wantHTTP(t, "POST", "api-key", d.key, 403)
	// Its gRPC lines, through odin check.
	d.wantCheck(t, 0, "ALLOWED (200)", "--key", d.key, "--path", "/v1/scans")
	d.wantCheck(t, 1, "DENIED 401", "--path", "/v1/scans")
	d.wantCheck(t, 1, "DENIED 403", "--key", d.key, "--method", "POST", "--path", "/v1/scans")
	// A session token from the dev issuer.
	var minted struct{ Token string }
	d.post(t, d.issuer+"/mint", "", `{"sub":"user_demo","permissions":["scans:read","scans:write"]}`, 200, &minted)
	d.wantHTTP(t, "POST", "Authorization", "Bearer "+minted.Token, 200)

	// Keys through the admin API and odin keys: a revoke denies at once.
	revokedByAPI := d.createKey(t, "revoked by the API")
	revokedByCLI := d.createKey(t, "revoked by odin keys")
	kept := d.createKey(t, "kept")
	d.wantHTTP(t, "POST", "api-key", revokedByAPI.Key, 200)
	d.post(t, d.admin+"/v1/keys/"+revokedByAPI.ID+"/revoke", d.token, "", 200, nil)
	d.wantHTTP(t, "GET", "api-key", revokedByAPI.Key, 401)
	d.wantHTTP(t, "GET", "api-key", revokedByCLI.Key, 200)
	if out, err := d.odinKeys(t, "revoke", revokedByCLI.ID); err != nil || !strings.HasPrefix(out, "revoked "+revokedByCLI.ID) {
		t.Fatalf("odin keys revoke: %v\n%s", err, out)
	}
	d.wantHTTP(t, "GET", "api-key", revokedByCLI.Key, 401)
	d.wantHTTP(t, "GET", "api-key", kept.Key, 200)
	out, err := d.odinKeys(t, "list")
	if err != nil || !strings.Contains(out, "odin dev demo key") || !regexp.MustCompile(revokedByAPI.ID+`.*revoked`).MatchString(out) {
		t.Errorf("odin keys list: %v\n%s", err, out)
	}
	if strings.Contains(out, kept.Key) || strings.Contains(out, d.key) {
		t.Errorf("odin keys list prints a key:\n%s", out)
	}

	t.Run("banner lines as printed", func(t *testing.T) { runBannerLines(t, d) })

	d.stop(t)
	again := startDev(t, bin, data)
	if again.token != d.token || again.key != d.key {
		t.Errorf("after a restart: token %q, demo key %q; want the first run's", again.token, again.key)
	}
	again.wantHTTP(t, "GET", "api-key", again.key, 200)
	again.wantHTTP(t, "GET", "api-key", revokedByAPI.Key, 401)
	again.wantHTTP(t, "GET", "api-key", revokedByCLI.Key, 401)
	again.wantHTTP(t, "POST", "api-key", kept.Key, 200)
	again.wantCheck(t, 0, "ALLOWED (200)", "--key", again.key, "--path", "/v1/scans")
	again.stop(t)
}

// buildOdin builds the binary as a user would; with the race detector when
// this test runs with it, so that the whole process is checked too.
func buildOdin(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "odin")
	// -buildvcs=auto: stamp the commit as go build does by default, whatever
	// GOFLAGS says (a machine may set -buildvcs=false).
	args := []string{"build", "-buildvcs=auto", "-o", bin}
	if testenv.RaceEnabled() {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "github.com/odin-scan/odin-authz/cmd/odin")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// checkVersion: `odin version` of a binary built in the checkout names the
// commit it was built from (go build stamps it) and the toolchain.
func checkVersion(t *testing.T, bin string) {
	t.Helper()
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("odin version --json: %v", err)
	}
	var v struct {
		Module    string `json:"module"`
		Revision  string `json:"vcs_revision"`
		Time      string `json:"vcs_time"`
		GoVersion string `json:"go_version"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("odin version --json: %v\n%s", err, out)
	}
	if v.Module != "github.com/odin-scan/odin-authz" || v.GoVersion != runtime.Version() {
		t.Errorf("odin version: %s", out)
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil { // not a git checkout (a source archive): nothing was stamped
		t.Logf("no git checkout, VCS stamping not checked: %v", err)
		return
	}
	top, _ := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if fi, err := os.Stat(filepath.Join(strings.TrimSpace(string(top)), ".git")); err != nil || !fi.IsDir() {
		// go build stamps a clone, not a linked worktree (.git is a file there).
		t.Logf("a linked git worktree: go build does not stamp it, VCS stamping not checked")
		return
	}
	if want := strings.TrimSpace(string(head)); v.Revision != want || v.Time == "" {
		t.Errorf("odin version names revision %q (time %q), want HEAD %s", v.Revision, v.Time, want)
	}
	text, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.Contains(string(text), "revision  "+v.Revision) {
		t.Errorf("odin version: %v\n%s", err, text)
	}
}

// cleanEnv is this process's environment without ODIN_* variables, so a
// developer's settings do not change what the test runs.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ODIN_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// devProcess is a running `odin dev` and what its banner says.
type devProcess struct {
	bin, banner            string
	grpc                   string
	forward, admin, issuer string
	token, key             string
	cmd                    *exec.Cmd
	stderr                 *testenv.LogBuffer
	done                   chan struct{}
	waitErr                error
}

// What the test reads from the banner.
var (
	bannerGRPC    = regexp.MustCompile(`(?m)^  gRPC Check +(\S+)$`)
	bannerForward = regexp.MustCompile(`(?m)^  forward-auth +(http://\S+)$`)
	bannerAdmin   = regexp.MustCompile(`(?m)^  admin API +(http://\S+)$`)
	bannerIssuer  = regexp.MustCompile(`(?m)^  dev issuer +(http://\S+) `)
	bannerToken   = regexp.MustCompile(`(?m)^  operator token +(\S+)$`)
	bannerKey     = regexp.MustCompile(`(?m)^  demo key +(odin_sk_\w+) `)
)

// startDev starts odin dev on ports the kernel picks (the defaults may be
// taken by a developer's own instance) and waits for its banner.
func startDev(t *testing.T, bin, data string) *devProcess {
	t.Helper()
	cmd := exec.Command(bin, "dev", "--data-dir", data, "--log-format", "text",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--issuer-addr", "127.0.0.1:0")
	cmd.Env = cleanEnv()
	d := &devProcess{bin: bin, cmd: cmd, stderr: &testenv.LogBuffer{}, done: make(chan struct{})}
	cmd.Stderr = d.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	bannerc := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "Ctrl-C") {
				break
			}
		}
		bannerc <- b.String()
		_, _ = io.Copy(io.Discard, stdout)
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = cmd.Process.Kill()
			<-d.done
		}
	})
	select {
	case d.banner = <-bannerc:
	case <-time.After(30 * time.Second):
		t.Fatalf("odin dev printed no banner in 30s; stderr:\n%s", d.stderr)
	}
	field := func(re *regexp.Regexp) string {
		m := re.FindStringSubmatch(d.banner)
		if m == nil {
			t.Fatalf("banner has no match for %s:\n%s\nstderr:\n%s", re, d.banner, d.stderr)
		}
		return m[1]
	}
	d.grpc, d.forward, d.admin = field(bannerGRPC), field(bannerForward), field(bannerAdmin)
	d.issuer, d.token, d.key = field(bannerIssuer), field(bannerToken), field(bannerKey)
	return d
}

// stop sends SIGINT, as Ctrl-C does, and wants a clean exit.
func (d *devProcess) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("odin dev still running 20s after SIGINT; stderr:\n%s", d.stderr)
	}
	logs := d.stderr.String()
	if d.waitErr != nil || !strings.Contains(logs, "odin dev stopped") || strings.Contains(logs, "DATA RACE") {
		t.Errorf("odin dev after SIGINT: %v; stderr:\n%s", d.waitErr, logs)
	}
	for _, secret := range []string{d.key, d.token} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs carry a secret (%.12s…)", secret)
		}
	}
}

// wantHTTP asks forward-auth about method /v1/scans with one header.
func (d *devProcess) wantHTTP(t *testing.T, method, header, value string, want int) {
	t.Helper()
	req, _ := http.NewRequest(method, d.forward+"/v1/scans", nil)
	if header != "" {
		req.Header.Set(header, value)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Errorf("%s /v1/scans with %s: %d %s, want %d", method, header, resp.StatusCode, body, want)
		return
	}
	switch want {
	case 200:
		if resp.Header.Get("x-odin-subject") != "user_demo" || !strings.Contains(resp.Header.Get("x-envoy-auth-headers-to-remove"), strings.ToLower(header)) {
			t.Errorf("allow without the identity or the credential removal: %v", resp.Header)
		}
	default:
		var denial struct {
			Error struct{ Code string }
		}
		if json.Unmarshal(body, &denial) != nil || denial.Error.Code == "" {
			t.Errorf("denial %d without the JSON body: %s", want, body)
		}
	}
}

// wantCheck runs odin check against the gRPC port.
func (d *devProcess) wantCheck(t *testing.T, wantExit int, wantOut string, args ...string) {
	t.Helper()
	cmd := exec.Command(d.bin, append([]string{"check", "--grpc", d.grpc}, args...)...)
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	code := 0
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != wantExit || !strings.Contains(out.String(), wantOut) {
		t.Errorf("odin check %v: exit %d, want %d with %q:\n%s", args, code, wantExit, wantOut, out.String())
	}
	if strings.Contains(out.String(), d.key) {
		t.Errorf("odin check prints the key in full:\n%s", out.String())
	}
}

// post sends a JSON POST, with a bearer token when one is given.
func (d *devProcess) post(t *testing.T, url, bearer, body string, want int, out any) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %d %s, want %d", url, resp.StatusCode, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("POST %s: %v in %s", url, err, b)
		}
	}
}

type createdKey struct{ Key, ID string }

// createKey creates a read-write key with the banner's admin API line.
func (d *devProcess) createKey(t *testing.T, name string) createdKey {
	t.Helper()
	var k createdKey
	d.post(t, d.admin+"/v1/keys", d.token, `{"name":"`+name+`","scopes":["scans:read","scans:write"],"user_id":"user_demo"}`, 201, &k)
	return k
}

// odinKeys runs `odin keys` as the banner shows it: through the admin API.
func (d *devProcess) odinKeys(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(d.bin, append([]string{"keys"}, args...)...)
	cmd.Env = cleanEnv("ODIN_ADMIN_URL="+d.admin, "ODIN_ADMIN_TOKEN="+d.token)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// runBannerLines runs each example line of the banner in sh, as pasted,
// and checks the answer its comment promises. A line whose tool is not
// installed is skipped.
func runBannerLines(t *testing.T, d *devProcess) {
	lines := strings.Split(d.banner, "\n")
	examples := 0
	for i, line := range lines {
		line = strings.TrimPrefix(line, "  ")
		cmdText, comment, _ := strings.Cut(line, "   # ")
		tool, _, _ := strings.Cut(cmdText, " ")
		script := cmdText
		switch {
		case strings.HasPrefix(cmdText, "JWT=$("): // with the line that uses it
			next := strings.TrimPrefix(lines[i+1], "  ")
			script = cmdText + "\n" + strings.Split(next, "   # ")[0]
			comment = strings.Split(next, "   # ")[1]
			tool = "curl"
		case strings.HasPrefix(cmdText, "ODIN_ADMIN_URL="):
			tool = d.bin
			comment = "lists"
		case strings.Contains(cmdText, "$JWT"), comment == "":
			continue
		}
		examples++
		if tool == "grpcurl" || tool == "curl" {
			if _, err := exec.LookPath(tool); err != nil {
				t.Logf("%s is not installed: not run: %s", tool, cmdText)
				continue
			}
		}
		cmd := exec.Command("sh", "-c", script)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		var want string
		switch m := regexp.MustCompile(`^(allowed|denied)? ?(\d{3})?`).FindStringSubmatch(comment); {
		case tool == "curl" && m[2] != "" && strings.Contains(script, "curl -i"):
			want = "HTTP/1.1 " + m[2]
		case tool == "curl" && m[2] == "201":
			want = `"key":"odin_sk_`
		case tool == "grpcurl" && m[1] == "allowed":
			want = `"okResponse"`
		case tool == "grpcurl" && m[2] == "401":
			want = `"code": "Unauthorized"`
		case tool == "grpcurl" && m[2] == "403":
			want = `"code": "Forbidden"`
		case comment == "lists":
			want = "odin dev demo key"
		case tool == d.bin && m[2] != "":
			want = "DENIED " + m[2]
		default:
			t.Errorf("banner line with no known expectation: %q", line)
			continue
		}
		wantErr := strings.HasPrefix(comment, "denied") && tool == d.bin
		if !strings.Contains(string(out), want) || (err != nil) != wantErr {
			t.Errorf("%s\n  = %v, want %q in:\n%s", script, err, want, out)
		}
	}
	if examples != 10 {
		t.Errorf("found %d example lines in the banner, want 10:\n%s", examples, d.banner)
	}
}
