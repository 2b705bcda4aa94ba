// Package console drives the operator console (admin/console) end to end
// in a real headless Chromium: it builds the odin binary, runs `odin dev`
// (odin authz and odin admin in one process, on an embedded store), opens
// the banner's one-time console link, signs out and in with the operator
// token, creates a key and reads it once, uses it against odin authz's
// forward-auth port (allowed), watches its usage chart fill, revokes it in
// the console and sees the next check denied, and signs out.
//
// Chromium is found on PATH (chromium, chromium-browser, google-chrome) or
// at ODIN_CHROMIUM_BIN; without it the test skips with a loud message, and
// fails under CI=true. Screenshots of each page go to
// ODIN_CONSOLE_SCREENSHOTS (default: odin-console-screenshots under the
// system's temporary directory), never into the repository. The package
// holds tests only.
package console
