package api

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/keystore"
)

// TestTypesMatchOpenAPI checks every request and response body the admin
// API's server and client share against the OpenAPI document: the JSON
// fields of the Go type are the schema's properties, and those the schema
// requires are exactly those the type always writes (no omitempty or
// omitzero). It also checks that the operations named use the schema, so
// a type cannot be checked against a schema its endpoint no longer uses.
func TestTypesMatchOpenAPI(t *testing.T) {
	doc := loadDocument(t)
	for _, tc := range []struct {
		schema string
		value  any
		usedBy []string // "METHOD path request" or "METHOD path status"
	}{
		{"CreateKeyRequest", CreateKeyRequest{}, []string{"POST /v1/keys request"}},
		{"CreatedKey", CreatedKey{}, []string{"POST /v1/keys 201"}},
		{"KeyPage", KeyPage{}, []string{"GET /v1/keys 200"}},
		{"KeyDetail", KeyDetail{}, []string{"GET /v1/keys/{id} 200"}},
		{"Key", Key{}, []string{"POST /v1/keys/{id}/revoke 200", "PATCH /v1/keys/{id} 200", "POST /v1/keys/{id}/disable 200", "POST /v1/keys/{id}/enable 200"}},
		{"UpdateKeyRequest", UpdateKeyRequest{}, []string{"PATCH /v1/keys/{id} request"}},
		{"RollKeyRequest", RollKeyRequest{}, []string{"POST /v1/keys/{id}/roll request"}},
		{"RolledKey", RolledKey{}, []string{"POST /v1/keys/{id}/roll 201"}},
		{"RevokedSession", keystore.RevokedSession{}, []string{"POST /v1/sessions/{sid}/revoke 200"}},
		{"AuditPage", AuditPage{}, []string{"GET /v1/audit-log 200"}},
		{"AuditEvent", keystore.AuditEvent{}, nil},
		{"HourlyUsage", keystore.HourlyUsage{}, nil},
		{"UsageTotals", keystore.UsageTotals{}, nil},
	} {
		t.Run(tc.schema, func(t *testing.T) {
			ref := doc.Components.Schemas[tc.schema]
			if ref == nil || ref.Value == nil {
				t.Fatalf("no schema %s in the document", tc.schema)
			}
			wantProps, wantRequired := schemaProperties(ref.Value)
			gotProps, gotAlways := jsonFields(reflect.TypeOf(tc.value))
			if diff := cmp.Diff(wantProps, gotProps); diff != "" {
				t.Errorf("%T's JSON fields against the schema's properties (-schema, +Go):\n%s", tc.value, diff)
			}
			if diff := cmp.Diff(wantRequired, gotAlways); diff != "" {
				t.Errorf("%T's always-written fields against the schema's required (-schema, +Go):\n%s", tc.value, diff)
			}
			for _, use := range tc.usedBy {
				if got := operationSchema(t, doc, use); got != tc.schema {
					t.Errorf("%s: schema %q, want %q", use, got, tc.schema)
				}
			}
		})
	}
}

func loadDocument(t *testing.T) *openapi3.T {
	t.Helper()
	raw, err := os.ReadFile("../openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(raw)
	if err != nil {
		t.Fatalf("load the OpenAPI document: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("the OpenAPI document is not valid: %v", err)
	}
	return doc
}

// schemaProperties are the properties of s and of the schemas it is allOf,
// and those of them it requires, each sorted.
func schemaProperties(s *openapi3.Schema) (props, required []string) {
	for name := range s.Properties {
		props = append(props, name)
	}
	required = append(required, s.Required...)
	for _, part := range s.AllOf {
		p, r := schemaProperties(part.Value)
		props, required = append(props, p...), append(required, r...)
	}
	slices.Sort(props)
	slices.Sort(required)
	return slices.Compact(props), slices.Compact(required)
}

// jsonFields are the names encoding/json writes for a struct type, its
// embedded structs' fields included, and those it writes whatever their
// value (no omitempty or omitzero), each sorted.
func jsonFields(typ reflect.Type) (names, always []string) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	for f := range typ.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			n, a := jsonFields(f.Type)
			names, always = append(names, n...), append(always, a...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
		if !slices.Contains(strings.Split(opts, ","), "omitempty") && !slices.Contains(strings.Split(opts, ","), "omitzero") {
			always = append(always, name)
		}
	}
	slices.Sort(names)
	slices.Sort(always)
	return names, always
}

// operationSchema is the name of the schema of an operation's request body
// ("METHOD path request") or of one of its responses ("METHOD path
// status"), in application/json.
func operationSchema(t *testing.T, doc *openapi3.T, use string) string {
	t.Helper()
	fields := strings.Fields(use)
	if len(fields) != 3 {
		t.Fatalf("%q: want METHOD path request|status", use)
	}
	item := doc.Paths.Value(fields[1])
	if item == nil || item.GetOperation(fields[0]) == nil {
		t.Fatalf("%s %s is not in the document", fields[0], fields[1])
	}
	op := item.GetOperation(fields[0])
	var content openapi3.Content
	if fields[2] == "request" {
		if op.RequestBody == nil || op.RequestBody.Value == nil {
			t.Fatalf("%s: no request body", use)
		}
		content = op.RequestBody.Value.Content
	} else {
		r := op.Responses.Value(fields[2])
		if r == nil || r.Value == nil {
			t.Fatalf("%s: no such response", use)
		}
		content = r.Value.Content
	}
	mt := content.Get("application/json")
	if mt == nil || mt.Schema == nil {
		t.Fatalf("%s: no application/json schema", use)
	}
	return strings.TrimPrefix(mt.Schema.Ref, "#/components/schemas/")
}

// An update's expires_at is absent (left as it is), null (removed) or a
// time, and is written back the same way.
func TestUpdateKeyRequestExpiry(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		body string
		want Expiry
	}{
		{`{"name":"x"}`, Expiry{}},
		{`{"expires_at":null}`, Expiry{Set: true}},
		{`{"expires_at":"2030-01-02T03:04:05Z"}`, Expiry{Set: true, At: &at}},
	} {
		var req UpdateKeyRequest
		if err := json.Unmarshal([]byte(tc.body), &req); err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		if diff := cmp.Diff(tc.want, req.ExpiresAt); diff != "" {
			t.Errorf("%s (-want, +got):\n%s", tc.body, diff)
		}
		back, err := json.Marshal(req)
		if err != nil || string(back) != tc.body {
			t.Errorf("%s written back as %s (%v)", tc.body, back, err)
		}
	}
	if err := json.Unmarshal([]byte(`{"expires_at":"tomorrow"}`), new(UpdateKeyRequest)); err == nil {
		t.Error("a bad time was accepted")
	}
}

// An update's rate_limit is absent (left as it is), null (back to the
// tier's) or a limit, written back the same way; read strictly.
func TestUpdateKeyRequestRateLimit(t *testing.T) {
	for _, tc := range []struct {
		body string
		want OptionalRateLimit
	}{
		{`{"name":"x"}`, OptionalRateLimit{}},
		{`{"rate_limit":null}`, OptionalRateLimit{Set: true}},
		{`{"rate_limit":{"rate":0.5,"burst":3}}`, OptionalRateLimit{Set: true, Limit: &keystore.RateLimit{Rate: 0.5, Burst: 3}}},
	} {
		var req UpdateKeyRequest
		if err := json.Unmarshal([]byte(tc.body), &req); err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		if diff := cmp.Diff(tc.want, req.RateLimit); diff != "" {
			t.Errorf("%s (-want, +got):\n%s", tc.body, diff)
		}
		back, err := json.Marshal(req)
		if err != nil || string(back) != tc.body {
			t.Errorf("%s written back as %s (%v)", tc.body, back, err)
		}
	}
	for _, bad := range []string{`{"rate_limit":{"rate":1,"burst":1,"extra":1}}`, `{"rate_limit":{"rate":"fast","burst":1}}`, `{"rate_limit":{"rate":1,"burst":1.5}}`, `{"rate_limit":5}`} {
		if err := json.Unmarshal([]byte(bad), new(UpdateKeyRequest)); err == nil {
			t.Errorf("%s was accepted", bad)
		}
	}
}
