//go:build !unix

package keystore

// newArena returns n zeroed bytes. Without mmap they are on the Go heap
// (pointer-free, so never scanned, but counted toward the GC's goal).
func newArena(n int) (mem []byte, free func(), err error) {
	return make([]byte, n), func() {}, nil
}
