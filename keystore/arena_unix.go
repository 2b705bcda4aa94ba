//go:build unix

package keystore

import "syscall"

// newArena returns n zeroed bytes of anonymous memory mapped outside the Go
// heap: the garbage collector neither scans it nor counts it toward its
// goal, so it costs its size in RSS (as pages are first written), not the
// twice that GOGC=100 lets a heap of the same size grow to. free unmaps it.
// Only data without Go pointers may live there.
func newArena(n int) (mem []byte, free func(), err error) {
	mem, err = syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, nil, err
	}
	return mem, func() { _ = syscall.Munmap(mem) }, nil
}
