package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestReadmeLayoutMatchesTree checks the README's Layout table against the
// tree: every Go package of the repository is named in it (by its own row
// or by a row naming a folder that holds it, like `deploy`), and every name
// in it is a folder that exists.
func TestReadmeLayoutMatchesTree(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	names := layoutNames(t, string(readme))
	for _, n := range names {
		if fi, err := os.Stat(filepath.Join("..", n)); err != nil || !fi.IsDir() {
			t.Errorf("README Layout names %q, which is not a folder of the repository", n)
		}
	}
	for _, pkg := range goPackages(t, "..") {
		if !slices.ContainsFunc(names, func(n string) bool { return pkg == n || strings.HasPrefix(pkg, n+"/") && coversBelow(n) }) {
			t.Errorf("package %s is not in the README's Layout table", pkg)
		}
	}
}

// coversBelow reports whether a Layout row for folder n stands for the
// packages below it too: the tools and deployment folders, whose
// subpackages are named in the row's description rather than rows of
// their own.
func coversBelow(n string) bool { return n == "deploy" || n == "envoy" }

var layoutCell = regexp.MustCompile("`([^`]+)`")

// layoutNames are the folder names in the first column of the README's
// Layout table.
func layoutNames(t *testing.T, readme string) []string {
	t.Helper()
	_, section, ok := strings.Cut(readme, "\n## Layout\n")
	if !ok {
		t.Fatal("README has no Layout section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var names []string
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || !strings.HasPrefix(line, "|") {
			continue
		}
		for _, m := range layoutCell.FindAllStringSubmatch(cells[1], -1) {
			names = append(names, strings.TrimSuffix(m[1], "/"))
		}
	}
	if len(names) < 10 {
		t.Fatalf("README Layout table: found %d package names; the table is not where the test looks", len(names))
	}
	return names
}

// goPackages are the folders under root holding .go files, as paths
// relative to root, without testdata and hidden folders.
func goPackages(t *testing.T, root string) []string {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") {
			rel, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				return err
			}
			seen[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var pkgs []string
	for p := range seen {
		pkgs = append(pkgs, p)
	}
	slices.Sort(pkgs)
	return pkgs
}
