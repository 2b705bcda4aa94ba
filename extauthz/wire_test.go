package extauthz

import (
	"bytes"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
)

// messageIdentity is what NewPrincipal encoded before it wrote wire bytes
// itself: the identity headers and the dynamic metadata built as messages.
// It is the reference the hand-written encoding must match.
func messageIdentity(id Identity) (*authv3.OkHttpResponse, *structpb.Struct) {
	values := []string{id.Method, id.Subject, id.OrgID, id.KeyID, id.SessionID, strings.Join(id.Scopes, " "), id.Tier}
	ok := &authv3.OkHttpResponse{}
	meta := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for i, h := range identityHeaders {
		v := strings.ToValidUTF8(values[i], "\uFFFD")
		if v == "" {
			continue
		}
		ok.Headers = append(ok.Headers, overwrite(h.name, v))
		meta.Fields[h.meta] = structpb.NewStringValue(v)
	}
	if id.Actor != "" {
		meta.Fields["actor"] = structpb.NewStringValue(strings.ToValidUTF8(id.Actor, "\uFFFD"))
	}
	return ok, meta
}

// messageAnswer is the answer okResponse stands for, built as messages.
func messageAnswer(d *Decision, h Headers, strip bool) *authv3.CheckResponse {
	ok, meta := messageIdentity(d.Principal.Identity)
	ok.HeadersToRemove = HeadersToRemove(d.Principal, h, d.Credential, strip)
	for _, p := range d.RateLimitHeaders() {
		ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, overwrite(p.Name, p.Value))
	}
	return &authv3.CheckResponse{Status: okStatus, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok}, DynamicMetadata: meta}
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// checkPrincipalWire fails unless p's wire bytes are exactly what
// proto.Marshal (deterministic) writes for the messages of id.
func checkPrincipalWire(t testing.TB, id Identity) {
	t.Helper()
	p := NewPrincipal(id)
	ok, meta := messageIdentity(id)
	wantOK, err := deterministic.Marshal(ok)
	if err != nil {
		t.Fatal(err)
	}
	wantMeta, err := deterministic.Marshal(&authv3.CheckResponse{DynamicMetadata: meta})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.wire[:p.okEnd], wantOK) {
		t.Errorf("%+v: headers\n%x, want\n%x", id, p.wire[:p.okEnd], wantOK)
	}
	if !bytes.Equal(p.wire[p.okEnd:], wantMeta) {
		t.Errorf("%+v: metadata\n%x, want\n%x", id, p.wire[p.okEnd:], wantMeta)
	}
	if len(p.wire) != cap(p.wire) {
		t.Errorf("%+v: %d bytes in a buffer of %d: the size was not computed exactly", id, len(p.wire), cap(p.wire))
	}
}

// TestPrincipalWireMatchesMarshal: NewPrincipal writes, byte for byte, what
// proto.Marshal wrote for the same headers and metadata built as messages.
func TestPrincipalWireMatchesMarshal(t *testing.T) {
	long := strings.Repeat("s", 300) // lengths that take two varint bytes
	for _, id := range []Identity{
		{},
		{Method: "api_key", Subject: "user_1", KeyID: "key_1", Scopes: []string{"scans:read", "scans:write"}, Tier: "pro"},
		{Method: "api_key", Subject: "org_1", OrgID: "org_1", KeyID: "key_2", Tier: "free"},
		{Method: "jwt", Subject: "user_2", OrgID: "org_2", SessionID: "sess_1", Scopes: []string{"read"}, Tier: "enterprise", Actor: "user_admin"},
		{Method: "jwt", Subject: "user_3", Actor: "user_\xff"},
		{Method: "api_key", Subject: "user_\xff\xfe", KeyID: "key_\xc3", Scopes: []string{"a\x80b", ""}, Tier: "pro"},
		{Method: "jwt", Subject: long, OrgID: long, SessionID: long, Scopes: []string{long, long}, Tier: long, Actor: long},
		{Scopes: []string{"", ""}}, // one space: a header
		{Actor: "only the actor"},
	} {
		checkPrincipalWire(t, id)
	}
}

// FuzzNewPrincipal compares the hand-written encoding with proto.Marshal's
// for any identity a store or a token could hold.
func FuzzNewPrincipal(f *testing.F) {
	f.Add("api_key", "user_1", "", "key_1", "", "scans:read scans:write", "pro", "")
	f.Add("jwt", "user_\xff", "org_1", "", "sess_1", "read", "", "user_admin")
	f.Add("", "", "", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, method, subject, org, keyID, session, scopes, tier, actor string) {
		var sc []string
		if scopes != "" {
			sc = strings.Split(scopes, " ")
		}
		checkPrincipalWire(t, Identity{Method: method, Subject: subject, OrgID: org, KeyID: keyID, SessionID: session, Scopes: sc, Tier: tier, Actor: actor})
	})
}

// TestOkResponseMatchesMessages: the answer okResponse writes decodes, as
// Envoy decodes it, into the same message as the one built field by field,
// for keys and sessions, with and without rate limits, credentials
// stripped or not, stray identity headers, and header_map requests.
func TestOkResponseMatchesMessages(t *testing.T) {
	key := NewPrincipal(Identity{Method: "api_key", Subject: "user_1", KeyID: "key_1", Scopes: []string{"scans:read", "scans:write"}, Tier: "pro"})
	orgKey := NewPrincipal(Identity{Method: "api_key", Subject: "org_1", OrgID: "org_1", KeyID: "key_2", Tier: "free"})
	session := NewPrincipal(Identity{Method: "jwt", Subject: "user_2", OrgID: "org_2", SessionID: "sess_1", Scopes: []string{"read"}, Tier: "enterprise", Actor: "user_admin"})
	limits := []struct {
		name string
		has  bool
		r    ratelimit.Result
	}{
		{"no limit", false, ratelimit.Result{}},
		{"limit", true, ratelimit.Result{Allowed: true, Limit: 1000000, Remaining: 999987, Reset: 1500 * time.Millisecond}},
		{"limit spent to zero", true, ratelimit.Result{Allowed: true, Limit: 20, Remaining: 0, Reset: 0}},
	}
	headers := []struct {
		name string
		h    Headers
	}{
		{"no stray", MapHeaders{"authorization": "Bearer x", "x-request-id": "req-1"}},
		{"stray identity headers", MapHeaders{"x-odin-subject": "user_mallory", "x_odin_tier": "enterprise", "x-odin-admin": "1", "x-odin-session-id": "s"}},
		{"header_map", rawHeaders{{Key: "X-Odin-Admin", Value: "1"}, {Key: "Api-Key", RawValue: []byte("odin_sk_x")}, {Key: "X-Odin-Key-Id", Value: "k"}}},
	}
	creds := []Credential{
		{Kind: CredentialAPIKey, InAuthorization: true},
		{Kind: CredentialAPIKey, InAPIKey: true},
		{Kind: CredentialAPIKey, InAuthorization: true, InAPIKey: true},
		{Kind: CredentialJWT, InAuthorization: true},
	}
	for _, strip := range []bool{true, false} {
		s := NewCheckServer(nil, CheckOptions{StripCredential: strip, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		for _, p := range []*Principal{key, orgKey, session, anonymous} {
			for _, l := range limits {
				for _, h := range headers {
					for _, c := range creds {
						d := &Decision{Outcome: Allow, Principal: p, Credential: c, HasRateLimit: l.has, RateLimit: l.r}
						b, err := proto.Marshal(s.okResponse(d, h.h))
						if err != nil {
							t.Fatal(err)
						}
						var got authv3.CheckResponse
						if err := proto.Unmarshal(b, &got); err != nil {
							t.Fatal(err)
						}
						want := messageAnswer(d, h.h, strip)
						// A set: the stray headers come in map order. (Sorted
						// copies: the lists without strays are shared.)
						got.GetOkResponse().HeadersToRemove = slices.Sorted(slices.Values(got.GetOkResponse().HeadersToRemove))
						want.GetOkResponse().HeadersToRemove = slices.Sorted(slices.Values(want.GetOkResponse().HeadersToRemove))
						if !proto.Equal(&got, want) {
							t.Errorf("strip %v, %s, %s, %s, %+v:\n got %v\nwant %v", strip, p.Subject, l.name, h.name, c, &got, want)
						}
					}
				}
			}
		}
	}
}

// TestRateLimitWire: the rate-limit headers are written without a string
// of their own, as the overwrite options of RateLimitHeaders.
func TestRateLimitWire(t *testing.T) {
	for _, r := range []ratelimit.Result{{Limit: 0}, {Limit: 7, Remaining: 3, Reset: time.Nanosecond}, {Limit: 1 << 40, Remaining: -1, Reset: time.Hour}} {
		d := &Decision{HasRateLimit: true, RateLimit: r}
		var want authv3.OkHttpResponse
		for _, p := range d.RateLimitHeaders() {
			want.ResponseHeadersToAdd = append(want.ResponseHeadersToAdd, overwrite(p.Name, p.Value))
		}
		v := d.rateLimitValues()
		b := v.append(nil, fieldOkResponseHeaders)
		if len(b) != v.size(fieldOkResponseHeaders) {
			t.Errorf("%+v: size %d, wrote %d", r, v.size(fieldOkResponseHeaders), len(b))
		}
		wantBytes, _ := deterministic.Marshal(&want)
		if !bytes.Equal(b, wantBytes) {
			t.Errorf("%+v: %x, want %x", r, b, wantBytes)
		}
	}
}

// The removal lists' wire bytes are the lists themselves.
func TestRemovalListWire(t *testing.T) {
	for mask := range sharedRemovals {
		r := &sharedRemovals[mask]
		for i := range r.wire {
			want, _ := deterministic.Marshal(&authv3.OkHttpResponse{HeadersToRemove: r.list(i)})
			if !bytes.Equal(r.wire[i], want) {
				t.Errorf("mask %b list %d: %x, want %x", mask, i, r.wire[i], want)
			}
		}
	}
}
