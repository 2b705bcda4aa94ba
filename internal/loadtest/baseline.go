package loadtest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// baselineReadyMsg is the log line a baseline server writes once serving.
const baselineReadyMsg = "baseline serving"

// BaselineOptions configure the do-nothing ext_authz server.
type BaselineOptions struct {
	GRPCAddr string // default 127.0.0.1:0
	HTTPAddr string // empty: no HTTP forward-auth port
	// StreamWorkers is odin authz's --grpc-stream-workers, read the same
	// way: 0 the default, negative a goroutine per stream.
	StreamWorkers int
}

// defaultStreamWorkers is odin authz's default number of gRPC stream
// workers (authzsvc.DefaultStreamWorkers; a test checks they agree), so
// that both servers run their handlers the same way.
const defaultStreamWorkers = 32

// streamWorkers reads a StreamWorkers setting as authzsvc.StreamWorkers
// does.
func streamWorkers(n int) uint32 {
	switch {
	case n == 0:
		return defaultStreamWorkers
	case n < 0:
		return 0
	}
	return uint32(n)
}

// newBaselineGRPC is the baseline's gRPC server, with odin authz's stream,
// worker and keepalive settings.
func newBaselineGRPC(opts BaselineOptions) *grpc.Server {
	srv := grpc.NewServer(
		grpc.MaxConcurrentStreams(1024),
		grpc.NumStreamWorkers(streamWorkers(opts.StreamWorkers)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	authv3.RegisterAuthorizationServer(srv, baselineCheck{})
	return srv
}

// ParseBaselineArgs reads the flags of `odin-load baseline`.
func ParseBaselineArgs(args []string, output io.Writer) (BaselineOptions, error) {
	fs := flag.NewFlagSet("baseline", flag.ContinueOnError)
	fs.SetOutput(output)
	var o BaselineOptions
	fs.StringVar(&o.GRPCAddr, "grpc-addr", "127.0.0.1:0", "gRPC Check listen address")
	fs.StringVar(&o.HTTPAddr, "http-addr", "127.0.0.1:0", "HTTP forward-auth listen address; empty disables")
	fs.IntVar(&o.StreamWorkers, "stream-workers", 0, "gRPC stream workers, as odin authz's --grpc-stream-workers (0: its default; negative: a goroutine per stream)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: odin-load baseline [flags]\n\nA do-nothing ext_authz server: answers every Check (and every HTTP request) OK\nafter reading one header. odin-load starts it as the baseline of every figure.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("baseline: unexpected argument %q", fs.Arg(0))
	}
	return o, nil
}

// baselineCheck answers every Check OK after reading one header: the cost of
// the gRPC transport and of an ext_authz exchange, with no decision at all.
type baselineCheck struct {
	authv3.UnimplementedAuthorizationServer
}

// okResponse is shared: marshalling a message from several goroutines
// only reads it.
var okResponse = &authv3.CheckResponse{
	Status:       &status.Status{Code: 0},
	HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
}

// Check implements authv3.AuthorizationServer.
func (baselineCheck) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	_ = req.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"]
	return okResponse, nil
}

// ServeBaseline serves the baseline until ctx ends. Its gRPC server has the
// same stream, stream-worker and keepalive settings as odin authz, its HTTP server the same
// timeouts, so the only difference under load is the decision. It logs one
// JSON line with msg "baseline serving" and its addresses to logw.
func ServeBaseline(ctx context.Context, opts BaselineOptions, logw io.Writer) error {
	log := slog.New(slog.NewJSONHandler(logw, nil))
	if opts.GRPCAddr == "" {
		opts.GRPCAddr = "127.0.0.1:0"
	}
	gl, err := net.Listen("tcp", opts.GRPCAddr)
	if err != nil {
		return fmt.Errorf("baseline: listen gRPC: %w", err)
	}
	srv := newBaselineGRPC(opts)
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(gl) }()

	var hs *http.Server
	httpAddr := ""
	if opts.HTTPAddr != "" {
		hl, err := net.Listen("tcp", opts.HTTPAddr)
		if err != nil {
			srv.Stop()
			return fmt.Errorf("baseline: listen HTTP: %w", err)
		}
		httpAddr = hl.Addr().String()
		hs = &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = r.Header.Get("Authorization")
				w.WriteHeader(http.StatusOK)
			}),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    96 << 10,
		}
		go func() { errc <- hs.Serve(hl) }()
	}
	log.Info(baselineReadyMsg, "grpc", gl.Addr().String(), "http", httpAddr)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	srv.GracefulStop()
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = hs.Shutdown(sctx)
		cancel()
	}
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	log.Info("baseline stopped")
	return nil
}
