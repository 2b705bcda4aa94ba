package extauthz

import (
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/odin-scan/odin-authz/keystore"
)

// Identity is who a request acts as, once authenticated.
type Identity struct {
	Method    string // "api_key" or "jwt"
	Subject   string // user id
	OrgID     string
	KeyID     string
	SessionID string
	Scopes    []string
	Tier      string
	// Actor is the impersonator's user id when a session token carries
	// Clerk's act claim: logged with the decision and sent as dynamic
	// metadata ("actor"), not as a header.
	Actor string `json:",omitempty"`
}

// The identity headers (docs/CONTRACT.md), in a fixed order.
const (
	HeaderAuthMethod = "x-odin-auth-method"
	HeaderSubject    = "x-odin-subject"
	HeaderOrgID      = "x-odin-org-id"
	HeaderKeyID      = "x-odin-key-id"
	HeaderSessionID  = "x-odin-session-id"
	HeaderScopes     = "x-odin-scopes"
	HeaderTier       = "x-odin-tier"

	// IdentityHeaderPrefix marks headers only this server may set: any the
	// client sends are removed before the upstream.
	IdentityHeaderPrefix = "x-odin-"
)

// MetadataNamespace is where Envoy files the dynamic metadata of an
// ext_authz answer.
const MetadataNamespace = "envoy.filters.http.ext_authz"

// Pair is one identity header.
type Pair struct{ Name, Value string }

// Principal is an Identity with its answer pre-rendered. It is built once
// per cached key or session and shared, read-only, by every request that
// presents that credential: the hot path only points at it.
//
// A principal lives as long as its LRU entry, so a million cached keys hold
// a million principals: the gRPC answer is kept as protobuf wire bytes (one
// allocation, about 0.5 KB) rather than as messages (about 2 KB of small
// objects), and the removal lists are shared by every principal with the
// same absent headers.
type Principal struct {
	Identity
	// Headers are the identity headers with a value, in order.
	Headers []Pair
	// Absent are the identity header names with no value: removed from the
	// upstream request, so a client cannot supply them.
	Absent []string

	// wire is the constant part of the gRPC answer, encoded once: the
	// OkHttpResponse.headers fields (wire[:okEnd]) and the
	// CheckResponse.dynamic_metadata field (wire[okEnd:]). okResponse
	// attaches them as the messages' unknown fields, which protobuf
	// marshals verbatim: on the wire they are the fields themselves.
	wire  []byte
	okEnd int
	// Absent plus the credential header(s), for when credentials are
	// stripped (shared: see removalLists).
	remove *removalLists
	// The rate-limit keys, built once here rather than on every check: by
	// credential (the API key, or the session's user) and by organisation.
	limitByCredential, limitByOrg string
}

// identityHeaders are the identity headers of docs/CONTRACT.md in answer order, with their
// dynamic-metadata names.
var identityHeaders = [...]struct{ name, meta string }{
	{HeaderAuthMethod, "auth_method"}, {HeaderSubject, "subject"}, {HeaderOrgID, "org_id"}, {HeaderKeyID, "key_id"},
	{HeaderSessionID, "session_id"}, {HeaderScopes, "scopes"}, {HeaderTier, "tier"},
}

// removalLists are the headers a principal removes from the upstream
// request: the identity headers it has no value for, with and without the
// credential headers. One set exists per combination of absent headers.
type removalLists struct {
	absent, authorization, apiKey, both []string
}

// sharedRemovals holds the removal lists of every absent-header mask.
var sharedRemovals = func() (t [1 << len(identityHeaders)]removalLists) {
	for mask := range t {
		var absent []string
		for i, h := range identityHeaders {
			if mask&(1<<i) != 0 {
				absent = append(absent, h.name)
			}
		}
		// Clipped: a caller that appends to a shared list gets a copy.
		with := func(names ...string) []string { return slices.Clip(append(slices.Clone(absent), names...)) }
		t[mask] = removalLists{absent: slices.Clip(absent), authorization: with("authorization"), apiKey: with("api-key"), both: with("authorization", "api-key")}
	}
	return t
}()

// NewPrincipal renders an identity.
func NewPrincipal(id Identity) *Principal {
	p := &Principal{Identity: id}
	values := [len(identityHeaders)]string{id.Method, id.Subject, id.OrgID, id.KeyID, id.SessionID, strings.Join(id.Scopes, " "), id.Tier}
	for i, v := range values {
		// protobuf refuses a string field that is not UTF-8; keep the
		// encoding below infallible whatever a store or a token holds.
		values[i] = strings.ToValidUTF8(v, "\uFFFD")
	}
	fields := make(map[string]*structpb.Value, len(values))
	var grpcHeaders []*corev3.HeaderValueOption
	n := 0
	for _, v := range values {
		if v != "" {
			n++
		}
	}
	p.Headers = make([]Pair, 0, n) // exact: it lives as long as the cache entry
	mask := 0
	for i, h := range identityHeaders {
		if values[i] == "" {
			mask |= 1 << i
			continue
		}
		p.Headers = append(p.Headers, Pair{h.name, values[i]})
		grpcHeaders = append(grpcHeaders, overwrite(h.name, values[i]))
		fields[h.meta] = structpb.NewStringValue(values[i])
	}
	if id.Actor != "" {
		fields["actor"] = structpb.NewStringValue(strings.ToValidUTF8(id.Actor, "\uFFFD"))
	}
	p.remove = &sharedRemovals[mask]
	p.Absent = p.remove.absent
	ok, err := proto.Marshal(&authv3.OkHttpResponse{Headers: grpcHeaders})
	if err != nil { // valid UTF-8 strings only: cannot fail
		panic("extauthz: encode identity headers: " + err.Error())
	}
	meta, err := proto.Marshal(&authv3.CheckResponse{DynamicMetadata: &structpb.Struct{Fields: fields}})
	if err != nil {
		panic("extauthz: encode identity metadata: " + err.Error())
	}
	p.wire, p.okEnd = append(ok, meta...), len(ok)
	p.limitByCredential = id.KeyID
	if p.limitByCredential == "" {
		p.limitByCredential = "user:" + id.Subject
	}
	p.limitByOrg = p.limitByCredential
	if id.OrgID != "" {
		p.limitByOrg = "org:" + id.OrgID
	}
	return p
}

// PrincipalForKey is the prepare of the key cache (keystore.NewCache): the
// identity of an API key, rendered once when the key enters the LRU.
func PrincipalForKey(k *keystore.Key) *Principal {
	return NewPrincipal(Identity{
		Method:  "api_key",
		Subject: k.Subject(),
		OrgID:   k.OrgID,
		KeyID:   k.ID,
		Scopes:  k.Scopes,
		Tier:    k.Tier,
	})
}

// appendFalse is shared by every header option: messages are only read
// once built.
var appendFalse = wrapperspb.Bool(false)

// overwrite is a header mutation that replaces any existing value. Both the
// old `append` flag and the newer `append_action` are set, because Envoy
// versions disagree on which one wins.
func overwrite(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: name, Value: value},
		//lint:ignore SA1019 set with append_action: Envoy versions disagree on which one wins
		Append:       appendFalse,
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}
