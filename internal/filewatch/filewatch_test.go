package filewatch

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// base is the modification time files start with; changes set later ones
// explicitly, so no test depends on the file system's timestamp resolution.
var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func write(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// replace puts a new file at path by rename, as an editor or a
// ConfigMap update does: a new identity, whatever its size and time.
func replace(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	tmp := path + ".tmp"
	write(t, tmp, content, mtime)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestWatcherPoll runs a sequence of changes and polls per case and
// compares what each poll reported.
func TestWatcherPoll(t *testing.T) {
	type step struct {
		change func(t *testing.T, dir string) // nil: poll without a change
		reset  bool                           // Reset before polling
	}
	poll := step{}
	do := func(f func(t *testing.T, dir string)) step { return step{change: f} }
	a := func(dir string) string { return filepath.Join(dir, "a") }
	b := func(dir string) string { return filepath.Join(dir, "b") }
	for _, tc := range []struct {
		name  string
		paths func(t *testing.T, dir string) []string
		steps []step
		want  []bool
	}{
		{
			name:  "unchanged",
			steps: []step{poll, poll, poll},
			want:  []bool{false, false, false},
		},
		{
			name: "a change is reported once it held still for one poll, then once only",
			steps: []step{
				do(func(t *testing.T, dir string) { write(t, a(dir), "two", base.Add(time.Second)) }),
				poll, poll,
			},
			want: []bool{false, true, false},
		},
		{
			name: "a file still being written waits",
			steps: []step{
				do(func(t *testing.T, dir string) { write(t, a(dir), "tw", base.Add(time.Second)) }),
				do(func(t *testing.T, dir string) { write(t, a(dir), "two", base.Add(2*time.Second)) }),
				poll,
			},
			want: []bool{false, false, true},
		},
		{
			name: "a touch is a change: same content is the caller's to see",
			steps: []step{
				do(func(t *testing.T, dir string) { write(t, a(dir), "one", base.Add(time.Hour)) }),
				poll,
			},
			want: []bool{false, true},
		},
		{
			name: "a rename into place with the same size and time is a change",
			steps: []step{
				do(func(t *testing.T, dir string) { replace(t, a(dir), "one", base) }),
				poll,
			},
			want: []bool{false, true},
		},
		{
			name: "a change undone before it settled is no change",
			steps: []step{
				do(func(t *testing.T, dir string) { write(t, a(dir), "two", base.Add(time.Second)) }),
				do(func(t *testing.T, dir string) { write(t, a(dir), "one", base) }),
				poll, poll,
			},
			want: []bool{false, false, false, false},
		},
		{
			name: "a removed file is a change, and so is its return",
			steps: []step{
				do(func(t *testing.T, dir string) {
					if err := os.Remove(a(dir)); err != nil {
						t.Fatal(err)
					}
				}),
				poll, poll,
				do(func(t *testing.T, dir string) { write(t, a(dir), "one", base) }),
				poll,
			},
			want: []bool{false, true, false, false, true},
		},
		{
			name: "Reset forgets a change waiting to settle",
			steps: []step{
				do(func(t *testing.T, dir string) { write(t, a(dir), "two", base.Add(time.Second)) }),
				{reset: true}, poll,
			},
			want: []bool{false, false, false},
		},
		{
			name: "a symbolic link swapped to another file is a change",
			paths: func(t *testing.T, dir string) []string {
				write(t, b(dir), "other", base)
				link := filepath.Join(dir, "link")
				if err := os.Symlink(a(dir), link); err != nil {
					t.Fatal(err)
				}
				return []string{link}
			},
			steps: []step{
				poll,
				do(func(t *testing.T, dir string) {
					tmp := filepath.Join(dir, "link.tmp")
					if err := os.Symlink(b(dir), tmp); err != nil {
						t.Fatal(err)
					}
					if err := os.Rename(tmp, filepath.Join(dir, "link")); err != nil {
						t.Fatal(err)
					}
				}),
				poll,
			},
			want: []bool{false, false, true},
		},
		{
			name: "any of several files; an empty path never changes",
			paths: func(t *testing.T, dir string) []string {
				write(t, b(dir), "bee", base)
				return []string{a(dir), "", b(dir)}
			},
			steps: []step{
				poll,
				do(func(t *testing.T, dir string) { write(t, b(dir), "bees", base.Add(time.Second)) }),
				poll,
			},
			want: []bool{false, false, true},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, a(dir), "one", base)
			paths := []string{a(dir)}
			if tc.paths != nil {
				paths = tc.paths(t, dir)
			}
			w := New(paths...)
			var got []bool
			for _, s := range tc.steps {
				if s.change != nil {
					s.change(t, dir)
				}
				if s.reset {
					w.Reset()
				}
				got = append(got, w.Poll())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("polls (-want, +got):\n%s", diff)
			}
		})
	}
}

// TestSeen: Seen is the files as of the last report, not of a change still
// settling.
func TestSeen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a")
	write(t, path, "one", base)
	w := New(path)
	later := base.Add(time.Hour)
	write(t, path, "two", later)
	mtime := func() time.Time { return w.Seen()[0].ModTime().UTC() }
	if w.Poll() || !mtime().Equal(base) {
		t.Fatalf("after the first poll of a change: Seen at %s, want %s", mtime(), base)
	}
	if !w.Poll() || !mtime().Equal(later) {
		t.Fatalf("after the change settled: Seen at %s, want %s", mtime(), later)
	}
}

func TestStateSame(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	write(t, a, "one", base)
	write(t, b, "one", base)
	sa, sb, none := Stat(a), Stat(b), Stat(filepath.Join(dir, "missing"))
	for _, tc := range []struct {
		name string
		x, y State
		want bool
	}{
		{"the same file", sa, Stat(a), true},
		{"another file of the same size and time", sa, sb, false},
		{"missing in both", none, Stat(filepath.Join(dir, "gone")), true},
		{"missing in one", none, sa, false},
		{"present in one", sa, none, false},
		{"an empty path is missing", Stat(""), none, true},
		{"different lengths", Stat(a, b), sa, false},
		{"both empty", Stat(), Stat(), true},
	} {
		if got := tc.x.Same(tc.y); got != tc.want {
			t.Errorf("%s: Same = %v, want %v", tc.name, got, tc.want)
		}
	}
}
