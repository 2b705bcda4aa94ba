package console

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/odin-scan/odin-authz/internal/testenv"
)

// chromium is the browser to drive: ODIN_CHROMIUM_BIN, else the first of
// the usual names on PATH; the test skips loudly without one (fails in CI).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ODIN_CHROMIUM_BIN"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "SKIPPING the console browser test: no chromium on PATH (Debian: apt-get install chromium; or set ODIN_CHROMIUM_BIN)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// screenshots is where the test writes its screenshots.
func screenshots(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ODIN_CONSOLE_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "odin-console-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots of the console pages: %s", dir)
	return dir
}

// dev is a running `odin dev` and what the test reads from its banner.
type dev struct {
	admin, forward, token, link string
	stderr                      *testenv.LogBuffer
}

var (
	bannerAdmin   = regexp.MustCompile(`(?m)^  admin API +(http://\S+)$`)
	bannerForward = regexp.MustCompile(`(?m)^  forward-auth +(http://\S+)$`)
	bannerToken   = regexp.MustCompile(`(?m)^  operator token +(\S+)$`)
	bannerConsole = regexp.MustCompile(`(?m)^  console +(http://\S+/console/signin/once/\S+) `)
)

// startDev builds odin and runs odin dev on ports the kernel picks.
func startDev(t *testing.T) *dev {
	t.Helper()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "odin")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/odin-scan/odin-authz/cmd/odin").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "dev", "--data-dir", filepath.Join(tmp, "data"), "--log-format", "text",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--issuer-addr", "127.0.0.1:0")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ODIN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	d := &dev{stderr: &testenv.LogBuffer{}}
	cmd.Stderr = d.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	bannerc := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "Ctrl-C") {
				break
			}
		}
		bannerc <- b.String()
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if logs := d.stderr.String(); d.token != "" && strings.Contains(logs, d.token) {
			t.Errorf("odin dev's logs carry the operator token")
		}
	})
	var banner string
	select {
	case banner = <-bannerc:
	case <-time.After(30 * time.Second):
		t.Fatalf("odin dev printed no banner in 30s; stderr:\n%s", d.stderr)
	}
	field := func(re *regexp.Regexp) string {
		m := re.FindStringSubmatch(banner)
		if m == nil {
			t.Fatalf("banner has no match for %s:\n%s", re, banner)
		}
		return m[1]
	}
	d.admin, d.forward, d.token, d.link = field(bannerAdmin), field(bannerForward), field(bannerToken), field(bannerConsole)
	if strings.Contains(d.link, d.token) {
		t.Fatalf("the console link carries the operator token: %s", d.link)
	}
	return d
}

// check asks odin authz's forward-auth port about GET /v1/scans with key.
func (d *dev) check(t *testing.T, key string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", d.forward+"/v1/scans", nil)
	req.Header.Set("api-key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// browser is a headless Chromium tab that fails the test on any error the
// page reports (a Content-Security-Policy violation among them).
type browser struct {
	ctx  context.Context
	dir  string
	mu   sync.Mutex
	errs []string
}

func newBrowser(t *testing.T, execPath, dir string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(execPath), chromedp.WindowSize(1280, 900), chromedp.DisableGPU)
	if os.Geteuid() == 0 { // Chromium's sandbox refuses to run as root
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	b := &browser{ctx: ctx, dir: dir}
	if err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *log.EventEntryAdded:
			// Network errors are the statuses the test asks for (a used
			// link's 404); the others (security: a CSP violation) count.
			if e.Entry.Level == log.EntryLevelError && e.Entry.Source != log.EntrySourceNetwork {
				msg = e.Entry.Text
			}
		case *runtime.EventExceptionThrown:
			msg = e.ExceptionDetails.Text
		}
		if msg != "" {
			b.mu.Lock()
			b.errs = append(b.errs, msg)
			b.mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("starting %s: %v", execPath, err)
	}
	return b
}

// checkErrors fails the test when the page reported an error.
func (b *browser) checkErrors(t *testing.T, what string) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errs) > 0 {
		t.Fatalf("%s: the page reported errors: %q", what, b.errs)
	}
}

// do runs steps with a deadline, failing the test on an error or a page
// error.
func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.failed(t)
		t.Fatalf("%s: %v", what, err)
	}
	b.checkErrors(t, what)
}

// failed saves a screenshot and the page's text, for the failure message.
func (b *browser) failed(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		_ = os.WriteFile(filepath.Join(b.dir, "failure.png"), png, 0o644)
	}
	if text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`)); err == nil {
		t.Logf("the page when it failed (also %s):\n%s", filepath.Join(b.dir, "failure.png"), text)
	}
}

// get runs one action that reads a value.
func get[T any](t *testing.T, b *browser, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	b.checkErrors(t, what)
	return v
}

// shot writes a full-page PNG screenshot named name.
func (b *browser) shot(t *testing.T, name string) {
	t.Helper()
	png := get(t, b, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

type css = chromedp.CSS

func TestConsoleInABrowser(t *testing.T) {
	execPath := chromium(t)
	dir := screenshots(t)
	d := startDev(t)
	b := newBrowser(t, execPath, dir)
	h1 := func() string { return get(t, b, "the heading", chromedp.Text(css("h1"))) }

	// The banner's one-time link opens the console signed in, once.
	b.do(t, "open the banner's link", chromedp.Navigate(d.link), chromedp.WaitVisible(css("caption")))
	if title, loc := h1(), get(t, b, "location", chromedp.Location()); title != "API keys" || !strings.HasSuffix(loc, "/console/keys") {
		t.Fatalf("the console link opened %q at %s", title, loc)
	}
	b.shot(t, "01-keys-via-link")
	b.do(t, "sign out", chromedp.Click(css("header form button")), chromedp.WaitVisible(css("#token")))
	b.do(t, "the link again", chromedp.Navigate(d.link), chromedp.WaitVisible(css("p.error")))
	if title := h1(); title != "Link used or expired" {
		t.Fatalf("the used link answered %q", title)
	}

	// Sign in with the operator token.
	b.do(t, "the sign-in page", chromedp.Navigate(d.admin+"/console/"), chromedp.WaitVisible(css("#token")))
	b.shot(t, "02-signin")
	b.do(t, "sign in", chromedp.SendKeys(css("#token"), d.token), chromedp.Submit(css("#token")), chromedp.WaitVisible(css("caption")))
	if title := h1(); title != "API keys" {
		t.Fatalf("after sign-in: %q", title)
	}

	// Create a key, with markup in its name: shown as text, never run.
	const name = `e2e <img src=x onerror=alert(1)> key`
	b.do(t, "create a key", chromedp.SendKeys(css("#name"), name), chromedp.SendKeys(css("#user_id"), "user_demo"),
		chromedp.Click(css(`input[name=scope][value="scans:read"]`)), chromedp.Submit(css("#name")),
		chromedp.WaitVisible(css("#plaintext")))
	key := get(t, b, "read the key once", chromedp.Value(css("#plaintext")))
	if title := h1(); !strings.HasPrefix(key, "odin_sk_") || title != "Key created" {
		t.Fatalf("the created page shows %q, %q", title, key)
	}
	// console.js ran under the CSP and found the Clipboard API.
	if get(t, b, "the copy button", chromedp.Evaluate[bool](`document.querySelector('button.copy').hidden`)) {
		t.Error("the copy button is hidden: console.js did not run")
	}
	b.shot(t, "03-key-created")

	// The key works against odin authz.
	const uses = 3
	for range uses {
		if got := d.check(t, key); got != http.StatusOK {
			t.Fatalf("a check with the new key: %d, want 200", got)
		}
	}

	// Its page: identity, and the usage chart once the usage is flushed
	// (odin authz flushes it every 10 s).
	b.do(t, "the key's page", chromedp.Click(css("main p a")), chromedp.WaitVisible(css("#usage-total")))
	keyURL := get(t, b, "location", chromedp.Location())
	var total string
	for deadline := time.Now().Add(30 * time.Second); ; {
		total = get(t, b, "the usage", chromedp.Text(css("#usage-total")))
		if total == strconv.Itoa(uses) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
		b.do(t, "reload", chromedp.Reload(), chromedp.WaitVisible(css("#usage-total")))
	}
	if total != strconv.Itoa(uses) {
		t.Fatalf("the usage chart counts %q checks, want %d", total, uses)
	}
	if bars := get(t, b, "the chart's bars", chromedp.Evaluate[int](`[...document.querySelectorAll('#usage-chart rect')].filter(r => Number(r.getAttribute('height')) > 0).length`)); bars == 0 {
		t.Error("the usage chart draws no bar")
	}
	// With JavaScript, uPlot draws the chart over the SVG (which stays for
	// browsers without it), and htmx swaps page bodies.
	if !get(t, b, "the uPlot chart", chromedp.Evaluate[bool](`document.querySelector('figure.chart.enhanced .uplot canvas') !== null`)) {
		t.Error("uPlot did not draw the usage chart")
	}
	if !get(t, b, "htmx", chromedp.Evaluate[bool](`typeof htmx === "object" && document.body.getAttribute("hx-boost") === "true"`)) {
		t.Error("htmx is not loaded")
	}
	if title := h1(); title != "Key "+name {
		t.Errorf("the key page's heading is %q, want the name as text", title)
	}
	b.shot(t, "04-key-usage")
	b.do(t, "per day", chromedp.Navigate(keyURL+"?by=day"), chromedp.WaitVisible(css("#usage-total")))
	b.shot(t, "05-key-usage-per-day")

	// Its checks over 24 hours, from the same flushed usage.
	if got := get(t, b, "the 24-hour checks", chromedp.Text(css("#usage-24h"))); got != strconv.Itoa(uses) {
		t.Errorf("the key page counts %q checks in 24 hours, want %d", got, uses)
	}

	// Rename it; disable it (the next check is denied) and enable it again.
	b.do(t, "rename", chromedp.SetValue(css("#edit-name"), "e2e renamed"), chromedp.Click(css("#save")), chromedp.WaitVisible(css("p.notice")))
	if title := h1(); title != "Key e2e renamed" {
		t.Fatalf("after the rename the heading is %q", title)
	}
	// Give it a network allowlist in the edit form, read it back, and
	// clear it again (any network) before the checks below.
	b.do(t, "set networks", chromedp.SetValue(css("#edit-cidrs"), "203.0.113.0/24\n2001:db8::/32"), chromedp.Click(css("#save")), chromedp.WaitVisible(css("#allowed-cidrs code")))
	if got := get(t, b, "the networks", chromedp.Text(css("#allowed-cidrs"))); got != "203.0.113.0/24, 2001:db8::/32 only" {
		t.Errorf("the key page shows networks %q", got)
	}
	b.shot(t, "05b-key-networks")
	b.do(t, "clear networks", chromedp.Clear(css("#edit-cidrs")), chromedp.Click(css("#save")), chromedp.WaitNotPresent(css("#allowed-cidrs code")))
	if got := get(t, b, "the networks", chromedp.Text(css("#allowed-cidrs"))); got != "any network" {
		t.Errorf("after clearing, the key page shows networks %q", got)
	}
	b.do(t, "disable", chromedp.Click(css("#disable")), chromedp.WaitVisible(css("#enable")))
	if got := d.check(t, key); got != http.StatusUnauthorized {
		t.Fatalf("a check with the disabled key: %d, want 401", got)
	}
	b.shot(t, "06-key-disabled")
	b.do(t, "enable", chromedp.Click(css("#enable")), chromedp.WaitVisible(css("#disable")))
	if got := d.check(t, key); got != http.StatusOK {
		t.Fatalf("a check with the enabled key: %d, want 200", got)
	}

	// Revoke it in the console: the next check is denied.
	b.do(t, "revoke", chromedp.Click(css("#revoke")), chromedp.WaitVisible(css("span.badge.revoked")))
	if got := d.check(t, key); got != http.StatusUnauthorized {
		t.Fatalf("a check with the revoked key: %d, want 401", got)
	}
	b.shot(t, "07-key-revoked")
	b.do(t, "the list", chromedp.Navigate(d.admin+"/console/keys"), chromedp.WaitVisible(css("caption")))
	b.shot(t, "08-keys")
	b.do(t, "keys unused for 90 days", chromedp.Navigate(d.admin+"/console/keys?unused=90d&expiring=7d"), chromedp.WaitVisible(css("caption")))
	if got := get(t, b, "the filtered list", chromedp.Text(css("caption"))); !strings.Contains(got, "filtered") {
		t.Errorf("the filtered list's caption is %q", got)
	}

	// The status page: this process's checks, and odin authz's decisions
	// (odin dev points the console at its own ops port).
	b.do(t, "the status page", chromedp.Click(css(`nav a[href="/console/status"]`)), chromedp.WaitVisible(css("#ready")))
	if got := get(t, b, "readiness", chromedp.Text(css("#ready"))); got != "ready" {
		t.Errorf("the status page says %q", got)
	}
	if got := get(t, b, "the decisions", chromedp.Text(css("#decision-table"))); !strings.Contains(got, "allow") {
		t.Errorf("the status page's decisions: %q", got)
	}
	b.shot(t, "09-status")
	b.do(t, "the audit log", chromedp.Click(css(`nav a[href="/console/audit"]`)), chromedp.WaitVisible(css(`form[aria-label="Filter the audit log"]`)))
	if title := h1(); title != "Audit log" {
		t.Fatalf("the audit log link opened %q", title)
	}
	b.shot(t, "10-audit-log")
	// On a phone's width: no page wider than the screen.
	b.do(t, "a phone's viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Navigate(keyURL), chromedp.WaitVisible(css("#usage-total")))
	if wide := get(t, b, "page width", chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`)); wide {
		t.Error("the key page is wider than a phone's screen")
	}
	b.shot(t, "11-key-on-a-phone")
	b.do(t, "back to a desktop viewport", chromedp.EmulateReset())

	// Sign out: the session is over, the pages ask for a token again.
	b.do(t, "sign out", chromedp.Click(css("header form button")), chromedp.WaitVisible(css("#token")))
	b.do(t, "the keys after signing out", chromedp.Navigate(d.admin+"/console/keys"), chromedp.WaitVisible(css("#token")))
	if loc := get(t, b, "location", chromedp.Location()); !strings.HasSuffix(loc, "/console/signin") {
		t.Fatalf("after signing out /console/keys is at %s", loc)
	}
	b.shot(t, "12-signed-out")
}
