// Package filewatch tells when files that a server reloads (a policy, a
// certificate and its key) have changed and then held still.
//
// It polls each file's identity, size and modification time rather than
// relying on file-system events: os.Stat follows symbolic links, so an
// editor's write-and-rename and a Kubernetes ConfigMap or Secret volume's
// symlink swap are both seen, on any file system. A change is reported once
// it has held still for one poll, so a file caught half-written, or a
// certificate written before its key, is not taken for the new version.
package filewatch

import "os"

// State is what a poll compares: for each path, the file's identity (which
// changes when a rename or a symlink swap puts another file in place), size
// and modification time; a nil entry for an empty path or a file that
// cannot be stat'ed.
type State []os.FileInfo

// Stat returns the State of paths now.
func Stat(paths ...string) State {
	st := make(State, len(paths))
	for i, path := range paths {
		if path == "" {
			continue
		}
		if fi, err := os.Stat(path); err == nil {
			st[i] = fi
		}
	}
	return st
}

// Same reports whether a and b saw the same files: each entry missing in
// both, or the same file with the same size and modification time in both.
func (a State) Same(b State) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x == nil || y == nil {
			if x != y {
				return false
			}
			continue
		}
		if !os.SameFile(x, y) || x.Size() != y.Size() || !x.ModTime().Equal(y.ModTime()) {
			return false
		}
	}
	return true
}

// Watcher is a set of files and what the polls saw of them. It is not safe
// for concurrent use: a reloader calls it under the lock that serialises its
// loads.
type Watcher struct {
	paths   []string
	seen    State // the files as the last Reset or reported change saw them
	pending State // a change seen once, reported when it holds still
	changed bool  // pending is set
}

// New returns a Watcher of paths that takes the files as they are now as
// seen. An empty path is watched as a file that never exists.
func New(paths ...string) *Watcher {
	w := &Watcher{paths: paths}
	w.Reset()
	return w
}

// Reset takes the files as they are now as seen and forgets a change
// waiting to settle: for a load made for another reason (a signal, an
// explicit reload), which read the files as they are.
func (w *Watcher) Reset() {
	w.seen, w.pending, w.changed = Stat(w.paths...), nil, false
}

// Poll looks at the files once. It reports true when they differ from what
// was last seen and are the same as at the previous poll: the change has
// held still, and is now what was seen. A file that changes back to what
// was seen before settling is no change.
func (w *Watcher) Poll() bool {
	st := Stat(w.paths...)
	switch {
	case st.Same(w.seen):
		w.changed = false
		return false
	case !w.changed || !st.Same(w.pending):
		w.pending, w.changed = st, true // wait one more poll for it to settle
		return false
	}
	w.seen, w.pending, w.changed = st, nil, false
	return true
}

// Seen returns the files as the last Reset or reported change saw them.
func (w *Watcher) Seen() State { return w.seen }
