package loadtest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bojand/ghz/runner"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jhump/protoreflect/desc"
	"github.com/jhump/protoreflect/dynamic"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// checkMethod is the fully qualified gRPC method ghz calls.
const checkMethod = "envoy.service.auth.v3.Authorization.Check"

// boundedPacer ends a run at whichever comes first: max requests, the
// duration, or the context. With rate 0 it never waits: the load is
// closed-loop, each of the fixed number of workers sending its next
// request as soon as its previous answer arrived. With a rate it spaces
// requests evenly (still never more in flight than workers), so two servers
// can be compared at the same throughput. It satisfies both ghz's and
// vegeta's Pacer.
type boundedPacer struct {
	ctx  context.Context
	max  uint64
	dur  time.Duration
	rate float64 // requests per second; 0: as fast as answers come
}

// Pace implements the Pacer interfaces.
func (p boundedPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	if hits >= p.max || elapsed >= p.dur || p.ctx.Err() != nil {
		return 0, true
	}
	if p.rate <= 0 {
		return 0, false
	}
	due := time.Duration(float64(hits) / p.rate * float64(time.Second))
	return max(due-elapsed, 0), false
}

// Rate implements the Pacer interfaces.
func (p boundedPacer) Rate(time.Duration) float64 { return p.rate }

// run is one bounded load run against one server.
type run struct {
	addr        string // host:port (gRPC) or base URL (HTTP)
	balanced    bool   // gRPC: addr names several replicas; balance round-robin
	concurrency int
	connections int
	requests    int64
	duration    time.Duration
	rate        float64 // 0: closed loop
	timeout     time.Duration
	// cred returns the credential of the i-th request of the run.
	cred func(i int64) credential
	// cycled says the run repeats a small set of credentials: the gRPC
	// generator then builds each request once (ghz's dynamic messages are
	// costly to build, and the generator shares the cores with the server).
	cycled bool
}

// runStats is what a run measured on the client side.
type runStats struct {
	requests int64
	errors   int64
	nonOK    int64 // HTTP only: answers other than 200
	issued   int64 // highest request index the generator asked for, plus one
	elapsed  time.Duration
	lat      *latencies
	kinds    map[string]int64 // error messages and non-OK statuses
}

var checkRequestDescriptor = sync.OnceValues(func() (*desc.MessageDescriptor, error) {
	md, err := desc.LoadMessageDescriptorForMessage(&authv3.CheckRequest{})
	if err != nil {
		return nil, fmt.Errorf("load CheckRequest descriptor: %w", err)
	}
	return md, nil
})

var protosetOnce = sync.OnceValues(func() ([]byte, error) {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(authv3.File_envoy_service_auth_v3_external_auth_proto)
	return proto.Marshal(set)
})

// runGRPC drives Check with the ghz runner. ghz discards response bodies,
// so the decisions (allow or deny) of a run are read from the server's
// metrics by the caller; ghz reports transport errors.
func runGRPC(ctx context.Context, r run) (*runStats, error) {
	protoset, err := protosetOnce()
	if err != nil {
		return nil, fmt.Errorf("build Check protoset: %w", err)
	}
	md, err := checkRequestDescriptor()
	if err != nil {
		return nil, err
	}
	var issued atomic.Int64
	var cache sync.Map // credential → *dynamic.Message, for cycled credentials
	build := func(c credential, i int64) (*dynamic.Message, error) {
		dm := dynamic.NewMessage(md)
		if err := dm.ConvertFrom(checkRequest(c, i)); err != nil {
			return nil, fmt.Errorf("build CheckRequest: %w", err)
		}
		return dm, nil
	}
	data := func(cd *runner.CallData) ([]*dynamic.Message, error) {
		i := cd.RequestNumber
		for {
			cur := issued.Load()
			if i < cur || issued.CompareAndSwap(cur, i+1) {
				break
			}
		}
		c := r.cred(i)
		if !r.cycled {
			dm, err := build(c, i)
			return []*dynamic.Message{dm}, err
		}
		// Marshalling a dynamic message only reads it: workers share them.
		if dm, ok := cache.Load(c); ok {
			return []*dynamic.Message{dm.(*dynamic.Message)}, nil
		}
		dm, err := build(c, i)
		if err != nil {
			return nil, err
		}
		actual, _ := cache.LoadOrStore(c, dm)
		return []*dynamic.Message{actual.(*dynamic.Message)}, nil
	}
	conns := max(1, min(r.connections, r.concurrency))
	lb := ""
	if r.balanced {
		lb = "round_robin"
	}
	cfg, err := runner.NewConfig(checkMethod, r.addr,
		runner.WithClientLoadBalancing(lb),
		runner.WithProtosetBinary(protoset),
		runner.WithInsecure(true),
		runner.WithConcurrency(uint(r.concurrency)),
		runner.WithConnections(uint(conns)),
		runner.WithTotalRequests(uint(r.requests)),
		runner.WithTimeout(r.timeout),
		runner.WithDialTimeout(5*time.Second),
		runner.WithDataProvider(data),
		runner.WithPacer(boundedPacer{ctx: ctx, max: uint64(r.requests), dur: r.duration, rate: r.rate}),
		runner.WithDisableTemplateFuncs(true),
		runner.WithDisableTemplateData(true),
	)
	if err != nil {
		return nil, fmt.Errorf("configure ghz: %w", err)
	}
	req, err := runner.NewRequester(cfg)
	if err != nil {
		return nil, fmt.Errorf("ghz: %w", err)
	}
	issued.Store(0) // NewRequester probes the data function once
	rep, err := req.Run()
	if err != nil {
		return nil, fmt.Errorf("ghz run: %w", err)
	}
	st := &runStats{requests: int64(rep.Count), issued: issued.Load(), elapsed: rep.Total, lat: newLatencies(), kinds: map[string]int64{}}
	for _, d := range rep.Details {
		st.lat.record(d.Latency)
		if d.Error != "" {
			st.errors++
			st.kinds[d.Status+": "+d.Error]++
		}
	}
	return st, nil
}

// credential is the header a request authenticates with.
type credential struct {
	header, value string
}

// checkRequest builds a CheckRequest the way Envoy's ext_authz filter sends
// it: lower-case headers with the pseudo-headers, :path with its query, an
// x-request-id, the client's address.
func checkRequest(c credential, i int64) *authv3.CheckRequest {
	headers := map[string]string{
		":authority": "api.odin.test", ":method": "GET", ":path": "/v1/scans?page=2", ":scheme": "https",
		"user-agent": "odin-load", "x-forwarded-proto": "https", "x-request-id": "req-load-" + strconv.FormatInt(i, 10),
	}
	if c.header != "" {
		headers[c.header] = c.value
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: strconv.FormatInt(i, 10), Method: "GET", Path: "/v1/scans?page=2", Host: "api.odin.test",
			Scheme: "https", Protocol: "HTTP/1.1", Headers: headers,
		}},
	}}
}
