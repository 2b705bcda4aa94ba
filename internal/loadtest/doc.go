// Package loadtest is the load-test harness behind cmd/odin-load: it seeds a
// PostgreSQL database with reproducible API keys, starts `odin authz` and a
// do-nothing ext_authz baseline as child processes, drives both with the
// same load — gRPC Check through the ghz runner, HTTP forward-auth through
// vegeta — interleaved A B A B, and reports every figure as a ratio against
// the baseline, with the server's CPU time per request read from /proc.
//
// It lives outside cmd/odin so that the server binary does not carry the
// load generators (ghz pulls in protoreflect, xDS and template libraries).
package loadtest
