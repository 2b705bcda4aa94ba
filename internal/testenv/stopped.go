package testenv

import (
	"testing"
	"time"
)

// WaitStopped waits up to timeout for what, run in a goroutine whose context
// has just ended, to send its result on done, and fails the test if it
// returns an error or does not return in time.
func WaitStopped(t testing.TB, done <-chan error, timeout time.Duration, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s returned %v after its context ended", what, err)
		}
	case <-time.After(timeout):
		t.Fatalf("%s did not stop within %v of its context ending", what, timeout)
	}
}
