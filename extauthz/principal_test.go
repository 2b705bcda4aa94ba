package extauthz

import (
	"io"
	"log/slog"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
)

// TestOkResponseOnTheWire checks that the pre-encoded answer decodes, as a
// gRPC client (Envoy) decodes it, into exactly the identity headers and
// metadata of docs/CONTRACT.md's identity headers, with the per-request removal list beside them.
func TestOkResponseOnTheWire(t *testing.T) {
	s := NewCheckServer(nil, CheckOptions{StripCredential: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for _, tc := range []struct {
		name   string
		id     Identity
		cred   Credential
		sent   MapHeaders
		remove []string
	}{
		{"user key in authorization", Identity{Method: "api_key", Subject: "user_1", KeyID: "key_1", Scopes: []string{"scans:read", "scans:write"}, Tier: "pro"},
			Credential{Kind: CredentialAPIKey, InAuthorization: true}, MapHeaders{"authorization": "Bearer x"},
			[]string{HeaderOrgID, HeaderSessionID, "authorization"}},
		{"org key in both headers, stray identity header", Identity{Method: "api_key", Subject: "org_1", OrgID: "org_1", KeyID: "key_2", Tier: "free"},
			Credential{Kind: CredentialAPIKey, InAuthorization: true, InAPIKey: true}, MapHeaders{"x-odin-tier": "enterprise", "x_odin_extra": "1"},
			[]string{HeaderSessionID, HeaderScopes, "authorization", "api-key", "x_odin_extra"}},
		{"session", Identity{Method: "jwt", Subject: "user_2", OrgID: "org_2", SessionID: "sess_1", Scopes: []string{"read"}, Tier: "enterprise"},
			Credential{Kind: CredentialJWT, InAuthorization: true}, MapHeaders{},
			[]string{HeaderKeyID, "authorization"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPrincipal(tc.id)
			d := &Decision{Outcome: Allow, Principal: p, Credential: tc.cred}
			b, err := proto.Marshal(s.okResponse(d, tc.sent))
			if err != nil {
				t.Fatal(err)
			}
			var got authv3.CheckResponse
			if err := proto.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			ok := got.GetOkResponse()
			if ok == nil || got.GetStatus().GetCode() != 0 {
				t.Fatalf("not an OK answer: %v", &got)
			}
			if len(ok.ProtoReflect().GetUnknown()) > 0 || len(got.ProtoReflect().GetUnknown()) > 0 {
				t.Error("fields a client does not know reached the wire")
			}
			var headers []Pair
			for _, h := range ok.GetHeaders() {
				headers = append(headers, Pair{h.GetHeader().GetKey(), h.GetHeader().GetValue()})
				//lint:ignore SA1019 the old flag is set on purpose, checked here
				if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD || h.GetAppend() == nil || h.GetAppend().GetValue() {
					t.Errorf("header %s is not an overwrite: %v", h.GetHeader().GetKey(), h)
				}
			}
			if !slices.Equal(headers, p.Headers) {
				t.Errorf("headers %v, want %v", headers, p.Headers)
			}
			meta := got.GetDynamicMetadata().GetFields()
			if len(meta) != len(p.Headers) {
				t.Errorf("metadata %v: want one field per identity header", meta)
			}
			for _, h := range identityHeaders {
				want := ""
				for _, pr := range p.Headers {
					if pr.Name == h.name {
						want = pr.Value
					}
				}
				if v, ok := meta[h.meta]; (want == "") != !ok || v.GetStringValue() != want {
					t.Errorf("metadata %s = %v, want %q", h.meta, v, want)
				}
			}
			if rm := ok.GetHeadersToRemove(); !sameSet(rm, tc.remove) {
				t.Errorf("headers to remove %v, want %v", rm, tc.remove)
			}
		})
	}
}

// TestRemovalListsAreShared checks the removal lists are one per set of
// absent headers, and that appending to one cannot change another
// principal's.
func TestRemovalListsAreShared(t *testing.T) {
	a := NewPrincipal(Identity{Method: "api_key", Subject: "u1", KeyID: "k1", Tier: "free"})
	b := NewPrincipal(Identity{Method: "api_key", Subject: "u2", KeyID: "k2", Tier: "pro"})
	if a.remove != b.remove {
		t.Error("two principals with the same absent headers do not share their removal lists")
	}
	before := slices.Clone(b.remove.authorization)
	_ = append(a.remove.authorization, "x-evil")
	if !slices.Equal(b.remove.authorization, before) {
		t.Error("appending to a shared removal list changed another principal's")
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	return slices.Equal(a, b)
}

func BenchmarkNewPrincipal(b *testing.B) {
	id := Identity{Method: "api_key", Subject: "user_2abc", KeyID: "key_01JD", Scopes: []string{"scans:read", "scans:write"}, Tier: "pro"}
	b.ReportAllocs()
	for b.Loop() {
		_ = NewPrincipal(id)
	}
}

// TestPrincipalOfInvalidUTF8: protobuf refuses non-UTF-8 strings, so a
// principal built from such bytes (a store row, a token claim) must still
// encode, with the bad bytes replaced, not panic.
func TestPrincipalOfInvalidUTF8(t *testing.T) {
	p := NewPrincipal(Identity{Method: "api_key", Subject: "user_\xff\xfe", KeyID: "key_1", Tier: "pro"})
	var ok authv3.OkHttpResponse
	if err := proto.Unmarshal(p.wire[:p.okEnd], &ok); err != nil {
		t.Fatalf("the encoded headers do not decode: %v", err)
	}
	for _, h := range ok.GetHeaders() {
		if h.GetHeader().GetKey() == HeaderSubject && h.GetHeader().GetValue() != "user_\uFFFD" {
			t.Errorf("subject header %q, want the invalid bytes replaced", h.GetHeader().GetValue())
		}
	}
}
