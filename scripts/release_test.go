// Package scripts holds the tests of the repository's scripts.
package scripts

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	debugbuildinfo "debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
)

// TestReleaseScript runs scripts/release.sh for one target on a clean clone
// of this checkout's HEAD and checks what it wrote: a static binary that
// names the HEAD revision and the Go version, and SHA256SUMS that verify.
func TestReleaseScript(t *testing.T) {
	// Built with -trimpath, the release reuses nothing the test run
	// compiled: from a cold cache it takes minutes on two cores, so it is a
	// check of its own (.ci/checks sets ODIN_RELEASE_TEST=1), not part of
	// the quick default run.
	if os.Getenv("ODIN_RELEASE_TEST") != "1" {
		t.Skip("the release build runs with ODIN_RELEASE_TEST=1 (as .ci/checks does)")
	}
	for _, tool := range []string{"git", "bash", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIP release script test: %s not found: %v", tool, err)
		}
	}
	src, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("SKIP release script test: this checkout is not a git repository (git rev-parse: %v)", err)
	}
	head := strings.TrimSpace(run(t, strings.TrimSpace(string(src)), "git", "rev-parse", "HEAD"))

	// A clean clone of HEAD, tagged as the release.
	clone := t.TempDir()
	run(t, clone, "git", "init", "-q")
	// By the name HEAD, not the hash: a server need not serve a hash that is
	// no ref's tip (a detached CI checkout).
	run(t, clone, "git", "fetch", "-q", "--depth=1", "file://"+strings.TrimSpace(string(src)), "HEAD")
	run(t, clone, "git", "-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD")
	if got := strings.TrimSpace(run(t, clone, "git", "rev-parse", "HEAD")); got != head {
		t.Fatalf("the clone is at %s, the checkout at %s", got, head)
	}
	t.Logf("release.sh of commit %s (uncommitted changes are not tested)", head[:12])
	run(t, clone, "git", "tag", "v0.0.0-releasetest")

	// One target, the host's architecture when it is one the script builds,
	// so that the binary can be run.
	arch := "amd64"
	if runtime.GOARCH == "arm64" {
		arch = "arm64"
	}
	out := release(t, clone, arch)
	bin := filepath.Join(out, "odin-v0.0.0-releasetest-linux-"+arch)
	for _, name := range []string{bin, filepath.Join(out, "odin-load-v0.0.0-releasetest-linux-"+arch)} {
		assertStatic(t, name)
	}
	// The go command stamped the commit, although GOFLAGS turned it off.
	if bi, err := debugbuildinfo.ReadFile(bin); err != nil {
		t.Errorf("%s: %v", bin, err)
	} else if !slices.Contains(bi.Settings, debug.BuildSetting{Key: "vcs.revision", Value: head}) {
		t.Errorf("build settings of %s lack vcs.revision=%s: %v", filepath.Base(bin), head, bi.Settings)
	}

	// The checksums cover both binaries and match them.
	sums, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	listed := 0
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q is not \"<sum>  <file>\"", sc.Text())
		}
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("SHA256SUMS names %s: %v", name, err)
		}
		if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
			t.Errorf("SHA256SUMS: %s has sum %x, listed %s", name, got, sum)
		}
		listed++
	}
	if listed != 2 {
		t.Errorf("SHA256SUMS lists %d files, want 2:\n%s", listed, sums)
	}

	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Logf("not running the linux/%s binary on %s/%s", arch, runtime.GOOS, runtime.GOARCH)
		return
	}
	goVersion := strings.TrimSpace(run(t, clone, "go", "env", "GOVERSION"))
	checkVersion(t, bin, head, goVersion, "linux/"+arch)

	// From a git worktree (.git is a file) the go command stamps nothing;
	// the script links the revision in instead.
	wt := filepath.Join(t.TempDir(), "wt")
	run(t, clone, "git", "worktree", "add", "-q", "--detach", wt, "v0.0.0-releasetest")
	out = release(t, wt, arch)
	checkVersion(t, filepath.Join(out, "odin-v0.0.0-releasetest-linux-"+arch), head, goVersion, "linux/"+arch)
}

// release runs scripts/release.sh of the checkout dir for linux/arch as
// v0.0.0-releasetest and returns its output directory.
func release(t *testing.T, dir, arch string) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(dir, "scripts", "release.sh"), "--targets", "linux/"+arch, "--no-image", "v0.0.0-releasetest", out)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false") // the script must turn stamping on regardless
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh in %s: %v\n%s", dir, err, b)
	}
	return out
}

// checkVersion runs `bin version --json` and checks it names the commit,
// unmodified, its time, the Go version and the platform.
func checkVersion(t *testing.T, bin, head, goVersion, platform string) {
	t.Helper()
	vb, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("odin version --json: %v", err)
	}
	var v struct {
		Revision  string `json:"vcs_revision"`
		Time      string `json:"vcs_time"`
		Modified  bool   `json:"vcs_modified"`
		GoVersion string `json:"go_version"`
		Platform  string `json:"platform"`
	}
	if err := json.Unmarshal(vb, &v); err != nil {
		t.Fatalf("odin version --json: %v\n%s", err, vb)
	}
	if v.Revision != head || v.Time == "" || v.Modified || v.GoVersion != goVersion || v.Platform != platform {
		t.Errorf("%s version --json = %s; want revision %s, a time, not modified, go %s, %s", filepath.Base(bin), vb, head, goVersion, platform)
	}
}

// assertStatic fails unless name is an ELF executable with no program
// interpreter and no shared-library dependency.
func assertStatic(t *testing.T, name string) {
	t.Helper()
	f, err := elf.Open(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter (PT_INTERP): dynamically linked", filepath.Base(name))
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v (DT_NEEDED)", filepath.Base(name), libs)
	}
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(b)
}
