package extauthz

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
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
}

// The identity headers of SPEC §4, in a fixed order.
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
type Principal struct {
	Identity
	// Headers are the identity headers with a value, in order.
	Headers []Pair
	// Absent are the identity header names with no value: removed from the
	// upstream request, so a client cannot supply them.
	Absent []string

	grpcHeaders []*corev3.HeaderValueOption
	metadata    *structpb.Struct
	// Absent plus the credential header(s), for when credentials are stripped.
	removeAuthorization, removeAPIKey, removeBoth []string
	// The rate-limit keys, built once here rather than on every check: by
	// credential (the API key, or the session's user) and by organisation.
	limitByCredential, limitByOrg string
}

// NewPrincipal renders an identity.
func NewPrincipal(id Identity) *Principal {
	p := &Principal{Identity: id}
	fields := map[string]*structpb.Value{}
	add := func(name, metaKey, value string) {
		if value == "" {
			p.Absent = append(p.Absent, name)
			return
		}
		p.Headers = append(p.Headers, Pair{name, value})
		p.grpcHeaders = append(p.grpcHeaders, overwrite(name, value))
		fields[metaKey] = structpb.NewStringValue(value)
	}
	add(HeaderAuthMethod, "auth_method", id.Method)
	add(HeaderSubject, "subject", id.Subject)
	add(HeaderOrgID, "org_id", id.OrgID)
	add(HeaderKeyID, "key_id", id.KeyID)
	add(HeaderSessionID, "session_id", id.SessionID)
	add(HeaderScopes, "scopes", strings.Join(id.Scopes, " "))
	add(HeaderTier, "tier", id.Tier)
	p.metadata = &structpb.Struct{Fields: fields}
	with := func(names ...string) []string { return append(append([]string(nil), p.Absent...), names...) }
	p.removeAuthorization, p.removeAPIKey, p.removeBoth = with("authorization"), with("api-key"), with("authorization", "api-key")
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

// PrincipalForKey is the keystore.CacheOptions.Prepare hook: the identity of
// an API key, rendered once when the key enters the LRU.
func PrincipalForKey(k *keystore.Key) any {
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
