package admin

import (
	_ "embed"
	"net/http"
)

// openAPIDocument is the OpenAPI 3.1 description of the admin API and of
// the operations endpoints beside it. The tests in openapi_test.go validate
// every request and response they make against it, so it cannot drift
// from the handlers.
//
//go:embed openapi.json
var openAPIDocument []byte

// serveOpenAPI is GET /openapi.json. It needs no credentials: the document
// describes the API, never anything it holds.
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIDocument)
}
