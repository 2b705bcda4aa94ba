// Package drills runs failure drills against whole `odin authz` replicas
// under load: a fault is injected while workers send Envoy-shaped gRPC Check
// requests, every answer is counted by outcome (allow, each denial status,
// transport error) and by the phase of the fault it was sent in, and the
// drill asserts what the design promises for each kind of credential (see
// the failure table in docs/DESIGN.md and docs/RELIABILITY.md, "Failure drills").
//
// Each drill logs one summary line of its figures; with ODIN_DRILL_REPORT set
// to a file name it also appends them there as one JSON object per line.
// Default durations keep the package well under a minute and a half;
// ODIN_LONG_TESTS=1 runs the long versions. Load goes to loopback only and is
// bounded in time and request count. The package holds tests only.
package drills
