// Package docs holds the project's documentation; its test checks that
// every relative link in the repository's Markdown files leads somewhere.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// link is a Markdown inline link or image: [text](target) or ![alt](target).
var link = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// heading is an ATX heading line.
var heading = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)

// TestRelativeLinksResolve reads every Markdown file of the repository and
// checks that each relative link names a file or folder that exists and,
// when it has a #fragment into a Markdown file, a heading of that file (as
// GitHub names heading anchors).
func TestRelativeLinksResolve(t *testing.T) {
	root := ".."
	files := markdownFiles(t, root)
	if len(files) < 10 {
		t.Fatalf("found %d Markdown files under the repository root; the walk is wrong", len(files))
	}
	anchors := map[string]map[string]bool{}
	checked := 0
	for _, file := range files {
		body, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for n, line := range strings.Split(stripCode(string(body)), "\n") {
			for _, m := range link.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				checked++
				path, frag, _ := strings.Cut(target, "#")
				dest := file
				if path != "" {
					dest = filepath.Join(filepath.Dir(file), path)
					if _, err := os.Stat(dest); err != nil {
						t.Errorf("%s:%d: link %q: %s does not exist", rel(root, file), n+1, target, rel(root, dest))
						continue
					}
				}
				if frag == "" || !strings.HasSuffix(dest, ".md") {
					continue
				}
				if anchors[dest] == nil {
					anchors[dest] = headingAnchors(t, dest)
				}
				if !anchors[dest][frag] {
					t.Errorf("%s:%d: link %q: %s has no heading with anchor #%s", rel(root, file), n+1, target, rel(root, dest), frag)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative links checked")
	}
}

func TestAnchor(t *testing.T) {
	for in, want := range map[string]string{
		"Failure modes":                  "failure-modes",
		"TLS and mTLS":                   "tls-and-mtls",
		"`odin dev`, step by step":       "odin-dev-step-by-step",
		"The rate-limit step under load": "the-rate-limit-step-under-load",
		"What a revoke answers, and how": "what-a-revoke-answers-and-how",
		"PostgreSQL read replicas":       "postgresql-read-replicas",
	} {
		if got := anchor(in); got != want {
			t.Errorf("anchor(%q) = %q, want %q", in, got, want)
		}
	}
}

func markdownFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		// configref_header.md is the start of docs/CONFIGURATION.md, whose
		// links are checked there.
		if !d.IsDir() && strings.HasSuffix(path, ".md") && d.Name() != "configref_header.md" {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// headingAnchors are the anchors GitHub gives the headings of a Markdown
// file, with -1, -2 … for repeated ones.
func headingAnchors(t *testing.T, file string) map[string]bool {
	t.Helper()
	body, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	out := map[string]bool{}
	for _, line := range strings.Split(stripCode(string(body)), "\n") {
		m := heading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		a := anchor(m[1])
		if k := seen[a]; k > 0 {
			out[a+"-"+itoa(k)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	}
	return out
}

// anchor is GitHub's anchor for a heading: lower case, spaces to hyphens,
// everything but letters, digits, hyphens and underscores dropped.
func anchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// stripCode blanks fenced code blocks (keeping their lines, for line
// numbers): links and headings in them are not links or headings.
func stripCode(s string) string {
	lines := strings.Split(s, "\n")
	in := false
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			in = !in
			lines[i] = ""
			continue
		}
		if in {
			lines[i] = ""
		}
	}
	return strings.Join(lines, "\n")
}

func rel(root, path string) string {
	r, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return r
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}
