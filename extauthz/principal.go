package extauthz

import (
	"slices"
	"strings"

	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/odin-scan/odin-authz/internal/netallow"
	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/jwtauth"
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
	// Factors is what a session token says about its verified factors
	// (Clerk's fva claim and its iat), for the routes whose policy rule
	// asks for reverification; nil for API keys and for tokens without a
	// usable fva. Shared and read-only, like the rest of the principal.
	Factors *jwtauth.FactorVerification `json:",omitempty"`
	// RateLimit is an API key's own rate limit, which an operator set
	// instead of its tier's (keystore.Key.RateLimit); nil: the tier's.
	RateLimit *ratelimit.Tier `json:",omitempty"`
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
	// networks are the networks an API key may be used from; nil: any
	// (every key without an allowlist, every session).
	networks *netallow.Set
}

// AllowedNetworks are the networks the principal's API key may be used
// from; nil: any.
func (p *Principal) AllowedNetworks() *netallow.Set { return p.networks }

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
	// wire holds the same four lists as OkHttpResponse.headers_to_remove
	// fields, indexed by removalIndex.
	wire [4][]byte
}

// removalIndex is the list (in removalLists.wire) of a credential: which
// headers carried it, when it is stripped.
func removalIndex(c Credential, strip bool) int {
	if !strip {
		return 0
	}
	i := 0
	if c.InAuthorization {
		i |= 1
	}
	if c.InAPIKey {
		i |= 2
	}
	return i
}

// list is the removal list of removalIndex i.
func (r *removalLists) list(i int) []string {
	return [4][]string{r.absent, r.authorization, r.apiKey, r.both}[i]
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
		for i := range t[mask].wire {
			for _, name := range t[mask].list(i) {
				t[mask].wire[i] = appendString(t[mask].wire[i], fieldOkHeadersToRemove, name)
			}
		}
	}
	return t
}()

// metadataOrder lists the dynamic-metadata fields in key order (the
// order a deterministic encoding writes a map in): an index into
// identityHeaders, or actorField.
var metadataOrder = func() []int {
	order := make([]int, 0, len(identityHeaders)+1)
	for i := range identityHeaders {
		order = append(order, i)
	}
	order = append(order, actorField)
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(metadataKey(a), metadataKey(b)) })
	return order
}()

// actorField stands for the actor in metadataOrder.
const actorField = len(identityHeaders)

func metadataKey(i int) string {
	if i == actorField {
		return "actor"
	}
	return identityHeaders[i].meta
}

// validUTF8 is s with any byte sequence that is not UTF-8 replaced by
// U+FFFD: protobuf decoders refuse a string field that is not UTF-8
// (Envoy's among them), whatever a store or a token holds.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// NewPrincipal renders an identity.
func NewPrincipal(id Identity) *Principal {
	p := &Principal{Identity: id}
	var values [len(identityHeaders) + 1]string // the headers', then the actor's
	for i, v := range [...]string{id.Method, id.Subject, id.OrgID, id.KeyID, id.SessionID, strings.Join(id.Scopes, " "), id.Tier, id.Actor} {
		values[i] = validUTF8(v)
	}
	n, mask, okSize, metaSize := 0, 0, 0, 0
	for i, h := range identityHeaders {
		if values[i] == "" {
			mask |= 1 << i
			continue
		}
		n++
		okSize += sizeHeaderOption(fieldOkHeaders, h.name, values[i])
	}
	for _, i := range metadataOrder {
		if values[i] != "" {
			metaSize += protowire.SizeTag(fieldStructFields) + protowire.SizeBytes(metadataEntrySize(metadataKey(i), values[i]))
		}
	}
	p.Headers = make([]Pair, 0, n) // exact: it lives as long as the cache entry
	wire := make([]byte, 0, okSize+protowire.SizeTag(fieldCheckDynamicMeta)+protowire.SizeBytes(metaSize))
	for i, h := range identityHeaders {
		if values[i] != "" {
			p.Headers = append(p.Headers, Pair{h.name, values[i]})
			wire = appendHeaderOption(wire, fieldOkHeaders, h.name, values[i])
		}
	}
	p.okEnd = len(wire)
	wire = protowire.AppendTag(wire, fieldCheckDynamicMeta, protowire.BytesType)
	wire = protowire.AppendVarint(wire, uint64(metaSize))
	for _, i := range metadataOrder {
		if values[i] != "" {
			wire = appendMetadataEntry(wire, metadataKey(i), values[i])
		}
	}
	p.wire = wire
	p.remove = &sharedRemovals[mask]
	p.Absent = p.remove.absent
	p.limitByCredential = id.KeyID
	if p.limitByCredential == "" {
		p.limitByCredential = "user:" + id.Subject
	}
	p.limitByOrg = p.limitByCredential
	if id.OrgID != "" {
		p.limitByOrg = "org:" + id.OrgID
	}
	if id.RateLimit != nil {
		// A key with its own limit counts on its own, whatever the limits
		// count by, in a bucket named after the limit too: a changed limit
		// starts from a full bucket of its own (docs/RATELIMIT.md).
		p.limitByCredential = p.limitByCredential + "#" + id.RateLimit.String()
		p.limitByOrg = p.limitByCredential
	}
	return p
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
