package envoy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"sigs.k8s.io/yaml"
)

// The compose stack (../docker-compose.yml) is checked offline: compose-go
// loads it as `docker compose` does (schema, interpolation with the
// defaults, references between services), then checkCompose holds it to the
// rules below and cross-checks it against the Envoy file it mounts and the
// Dockerfile it builds.

const (
	composePath    = "../docker-compose.yml"
	dockerfilePath = "../Dockerfile"
	// envoyMountTarget is where the official Envoy image reads its bootstrap.
	envoyMountTarget = "/etc/envoy/envoy.yaml"
	// composeEnvoyFile is the Envoy bootstrap the stack must run: the gRPC one
	// envoy/README.md tells users to use.
	composeEnvoyFile = "envoy-grpc.yaml"
)

// stackServices must exist; loadProfile holds those only started on demand.
var (
	stackServices = []string{"postgres", "redis", "migrate", "authz", "admin", "envoy", "upstream", "issuer"}
	// onDemand maps each on-demand service to its only profile: load drives
	// the stack, bench is the isolated benchmark with its own stores.
	onDemand = map[string]string{"load": "load", "bench": "bench", "bench-postgres": "bench", "bench-redis": "bench"}
)

// wantDependsOn lists, per service, the dependencies it must declare and the
// condition each must wait for.
var wantDependsOn = map[string]map[string]string{
	"migrate": {"postgres": types.ServiceConditionHealthy},
	"authz":   {"migrate": types.ServiceConditionCompletedSuccessfully, "redis": types.ServiceConditionHealthy},
	"admin":   {"migrate": types.ServiceConditionCompletedSuccessfully, "redis": types.ServiceConditionHealthy},
	"envoy":   {"authz": types.ServiceConditionHealthy},
}

// publishable are the only host ports the stack may publish, by service:
// the API through Envoy, the admin API, and the dev issuer for minting.
var publishable = map[string][]uint32{"envoy": {8000}, "admin": {9004}, "issuer": {9005}}

// odinProbes says, per odin service, which variable holds the listen
// address its health check must probe.
var odinProbes = map[string]string{"authz": "ODIN_OPS_ADDR", "admin": "ODIN_ADMIN_ADDR", "issuer": "ODIN_DEVISSUER_ADDR"}

// odinCommands is the odin subcommand each service must run.
var odinCommands = map[string]string{"migrate": "migrate", "authz": "authz", "admin": "admin", "issuer": "devissuer"}

// loadCompose loads a compose file's content as `docker compose` would from
// the repository root, with env as the only environment (no .env, no OS
// environment), so ${VAR:-default}s take their defaults.
func loadCompose(ctx context.Context, data []byte, env map[string]string) (*types.Project, error) {
	root, err := filepath.Abs("..")
	if err != nil {
		return nil, err
	}
	return loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "docker-compose.yml"), Content: data}},
		Environment: env,
	})
}

// composeInputs are the files the stack is checked against.
type composeInputs struct {
	root       string   // repository root, absolute
	envoyFiles []string // the Envoy files config_test.go validates (base names)
	dockerfile []byte
}

func newComposeInputs(t *testing.T) composeInputs {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	return composeInputs{
		root:       root,
		envoyFiles: envoyFiles(t),
		dockerfile: df,
	}
}

func TestComposeStack(t *testing.T) {
	data, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	in := newComposeInputs(t)
	p, err := loadCompose(t.Context(), data, nil)
	if err != nil {
		t.Fatalf("load %s: %v", composePath, err)
	}
	if err := checkCompose(p, in); err != nil {
		t.Fatalf("%s:\n%v", composePath, err)
	}

	// `docker compose up` starts the stack without the load profile.
	if slices.Contains(p.ServiceNames(), "load") {
		t.Error("load runs with a plain `docker compose up`; it belongs to the load profile only")
	}
	// The forward-auth port says what it decides: the request line, as
	// envoy-http.yaml (which says so too) sends it.
	if got := envOf(p, "authz", "ODIN_FORWARDED_HEADERS"); got != "none" {
		t.Errorf("authz: ODIN_FORWARDED_HEADERS = %q, want none (what envoy-http.yaml sends)", got)
	}
	if b, err := os.ReadFile("envoy-http.yaml"); err != nil || !strings.Contains(string(b), "ODIN_FORWARDED_HEADERS=none") {
		t.Errorf("envoy-http.yaml does not name the mode odin authz runs with (ODIN_FORWARDED_HEADERS=none): %v", err)
	}
	// Overrides from the environment reach the services.
	p, err = loadCompose(t.Context(), data, map[string]string{"ODIN_ADMIN_TOKEN": "operator-token-from-the-environment-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	if got := envOf(p, "admin", "ODIN_ADMIN_TOKEN"); got != "operator-token-from-the-environment-0123456789" {
		t.Errorf("ODIN_ADMIN_TOKEN from the environment: admin got %q", got)
	}
}

// checkCompose reports every way the stack breaks the rules, not only the
// first.
func checkCompose(p *types.Project, in composeInputs) error {
	all := p.AllServices()
	var errs []error
	for _, name := range append(append([]string{}, stackServices...), slices.Sorted(maps.Keys(onDemand))...) {
		if _, ok := all[name]; !ok {
			errs = append(errs, fmt.Errorf("service %q is missing", name))
		}
	}
	for _, name := range stackServices {
		if _, ok := p.Services[name]; !ok {
			if _, exists := all[name]; exists {
				errs = append(errs, fmt.Errorf("service %q does not start with a plain `docker compose up` (profiles %v)", name, all[name].Profiles))
			}
		}
	}
	for name, profile := range onDemand {
		if s, ok := all[name]; ok && !slices.Equal(s.Profiles, []string{profile}) {
			errs = append(errs, fmt.Errorf("service %q: profiles %v, want [%s]", name, s.Profiles, profile))
		}
	}
	errs = append(errs, checkDependencies(all)...)
	errs = append(errs, checkHealthChecks(all)...)
	errs = append(errs, checkPorts(all)...)
	errs = append(errs, checkImages(all, in.dockerfile)...)
	errs = append(errs, checkRestarts(p)...)
	errs = append(errs, checkOdinServices(all)...)
	errs = append(errs, checkLoad(all)...)
	errs = append(errs, checkBench(all)...)
	errs = append(errs, checkEnvoyService(all, in)...)
	return errors.Join(errs...)
}

func checkDependencies(all types.Services) []error {
	var errs []error
	for name, want := range wantDependsOn {
		s, ok := all[name]
		if !ok {
			continue
		}
		for dep, cond := range want {
			got, ok := s.DependsOn[dep]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("%s: does not depend on %s (want condition %s)", name, dep, cond))
			case got.Condition != cond:
				errs = append(errs, fmt.Errorf("%s: depends on %s with condition %s, want %s", name, dep, got.Condition, cond))
			}
		}
	}
	// Whatever the lists above say, a condition must be one its target can meet.
	for name, s := range all {
		for dep, d := range s.DependsOn {
			target, ok := all[dep]
			if !ok {
				continue // compose-go refuses unknown services itself
			}
			switch d.Condition {
			case types.ServiceConditionHealthy:
				if !hasHealthCheck(target) {
					errs = append(errs, fmt.Errorf("%s: waits for %s to be healthy, but %s has no health check", name, dep, dep))
				}
			case types.ServiceConditionCompletedSuccessfully:
				if target.Restart != types.RestartPolicyNo {
					errs = append(errs, fmt.Errorf("%s: waits for %s to complete, but %s restarts (%q)", name, dep, dep, target.Restart))
				}
			}
		}
	}
	return errs
}

func hasHealthCheck(s types.ServiceConfig) bool {
	h := s.HealthCheck
	return h != nil && !h.Disable && len(h.Test) > 0 && h.Test[0] != "NONE"
}

// checkHealthChecks requires a health check on every long-running service
// the others wait for, probing what makes it usable.
func checkHealthChecks(all types.Services) []error {
	var errs []error
	want := map[string]string{"postgres": "pg_isready", "redis": "redis-cli ping"}
	for name, probe := range want {
		s, ok := all[name]
		if !ok {
			continue
		}
		if !hasHealthCheck(s) || !strings.Contains(strings.Join(s.HealthCheck.Test, " "), probe) {
			errs = append(errs, fmt.Errorf("%s: want a health check running %q", name, probe))
		}
	}
	for name, addrVar := range odinProbes {
		s, ok := all[name]
		if !ok {
			continue
		}
		if !hasHealthCheck(s) {
			errs = append(errs, fmt.Errorf("%s: no health check", name))
			continue
		}
		test := s.HealthCheck.Test
		i := slices.Index(test, "--url")
		if len(test) < 4 || test[0] != "CMD" || test[1] != "/odin" || test[2] != "healthcheck" || i < 0 || i+1 >= len(test) {
			errs = append(errs, fmt.Errorf("%s: health check %q, want [CMD /odin healthcheck --url URL] (the image has no shell)", name, test))
			continue
		}
		u, err := url.Parse(test[i+1])
		listen := portOf(envOfService(s, addrVar))
		if err != nil || u.Hostname() != "127.0.0.1" || u.Port() != listen {
			errs = append(errs, fmt.Errorf("%s: health check probes %s, want 127.0.0.1 on its %s port %s", name, test[i+1], addrVar, listen))
		}
	}
	return errs
}

// checkPorts allows only the publishable ports, and only on loopback.
func checkPorts(all types.Services) []error {
	var errs []error
	for name, s := range all {
		allowed := publishable[name]
		for _, port := range s.Ports {
			if !slices.Contains(allowed, port.Target) {
				errs = append(errs, fmt.Errorf("%s: publishes port %d; only %v may be published", name, port.Target, publishable))
			}
			if ip := net.ParseIP(port.HostIP); ip == nil || !ip.IsLoopback() {
				errs = append(errs, fmt.Errorf("%s: publishes port %d on %q; bind it to 127.0.0.1", name, port.Target, port.HostIP))
			}
		}
	}
	for name, ports := range publishable {
		s, ok := all[name]
		if !ok {
			continue
		}
		for _, want := range ports {
			if !slices.ContainsFunc(s.Ports, func(p types.ServicePortConfig) bool { return p.Target == want }) {
				errs = append(errs, fmt.Errorf("%s: port %d is not published", name, want))
			}
		}
	}
	return errs
}

// imageRef matches name[:tag][@digest]; the tag is group 2.
var imageRef = regexp.MustCompile(`^([^@]+?)(?::([\w][\w.-]*))?(@sha256:[0-9a-f]{64})?$`)

// pinnedImage says why ref is not pinned, "" when it is.
func pinnedImage(ref string) string {
	m := imageRef.FindStringSubmatch(ref)
	switch {
	case m == nil:
		return "not an image reference"
	case m[3] != "":
		return ""
	case m[2] == "":
		return "no tag (that is :latest)"
	case strings.Contains(m[2], "latest"):
		return "a moving *latest tag"
	}
	return ""
}

// checkImages requires a pinned image on every service, and build targets
// that the Dockerfile defines on base images that are pinned too.
func checkImages(all types.Services, dockerfile []byte) []error {
	var errs []error
	stages, bases := dockerfileStages(dockerfile)
	for _, b := range bases {
		if why := pinnedImage(b); why != "" {
			errs = append(errs, fmt.Errorf("Dockerfile: FROM %s: %s", b, why))
		}
	}
	for name, s := range all {
		if s.Image == "" {
			errs = append(errs, fmt.Errorf("%s: no image name", name))
		} else if why := pinnedImage(s.Image); why != "" {
			errs = append(errs, fmt.Errorf("%s: image %s: %s", name, s.Image, why))
		}
		if s.Build != nil && !slices.Contains(stages, s.Build.Target) {
			errs = append(errs, fmt.Errorf("%s: build target %q is not a stage of the Dockerfile (%v)", name, s.Build.Target, stages))
		}
	}
	return errs
}

// dockerfileStages returns the stage names and the external base images of
// a Dockerfile, ARG defaults substituted.
func dockerfileStages(df []byte) (stages, bases []string) {
	args := map[string]string{}
	argRE := regexp.MustCompile(`(?i)^ARG\s+(\w+)=(\S+)`)
	fromRE := regexp.MustCompile(`(?i)^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?`)
	for _, line := range strings.Split(string(df), "\n") {
		line = strings.TrimSpace(line)
		if m := argRE.FindStringSubmatch(line); m != nil {
			args[m[1]] = m[2]
		}
		if m := fromRE.FindStringSubmatch(line); m != nil {
			img := os.Expand(m[1], func(k string) string { return args[k] })
			if !slices.Contains(stages, img) {
				bases = append(bases, img)
			}
			if m[2] != "" {
				stages = append(stages, m[2])
			}
		}
	}
	return stages, bases
}

// checkRestarts: servers come back after a crash or a reboot; one-shots and
// the on-demand load services do not.
func checkRestarts(p *types.Project) []error {
	var errs []error
	for name, s := range p.AllServices() {
		oneShot := name == "migrate" || !slices.Contains(p.ServiceNames(), name)
		switch {
		case oneShot && s.Restart != types.RestartPolicyNo:
			errs = append(errs, fmt.Errorf("%s: restart %q; a one-shot or on-demand service wants \"no\"", name, s.Restart))
		case !oneShot && !slices.Contains([]string{types.RestartPolicyAlways, types.RestartPolicyUnlessStopped, types.RestartPolicyOnFailure}, s.Restart):
			errs = append(errs, fmt.Errorf("%s: restart %q; a server wants unless-stopped, always or on-failure", name, s.Restart))
		}
	}
	return errs
}

// checkOdinServices checks the odin commands, their settings and that the
// settings agree with the services they name.
func checkOdinServices(all types.Services) []error {
	var errs []error
	for name, cmd := range odinCommands {
		if s, ok := all[name]; ok && (len(s.Command) == 0 || s.Command[0] != cmd) {
			errs = append(errs, fmt.Errorf("%s: command %q, want odin %s", name, s.Command, cmd))
		}
	}
	if s, ok := all["authz"]; ok {
		if s.Deploy == nil || s.Deploy.Replicas == nil || *s.Deploy.Replicas < 2 {
			errs = append(errs, errors.New("authz: want deploy.replicas >= 2 (revocation across replicas is the point of Redis)"))
		}
		if s.ContainerName != "" {
			errs = append(errs, errors.New("authz: container_name would allow a single replica"))
		}
	}
	if s, ok := all["admin"]; ok && len(envOfService(s, "ODIN_ADMIN_TOKEN")) < 32 {
		errs = append(errs, errors.New("admin: ODIN_ADMIN_TOKEN must be at least 32 characters, or admin refuses to start"))
	}
	// Every process sharing the Redis must authenticate its entries with the
	// same secret, or each refuses what the others wrote.
	authzMAC, adminMAC := envOfService(all["authz"], "ODIN_REDIS_MAC_SECRET"), envOfService(all["admin"], "ODIN_REDIS_MAC_SECRET")
	for name, v := range map[string]string{"authz": authzMAC, "admin": adminMAC} {
		if _, ok := all[name]; ok && len(v) < 32 {
			errs = append(errs, fmt.Errorf("%s: ODIN_REDIS_MAC_SECRET must be at least 32 bytes, or it refuses to start with Redis", name))
		}
	}
	if authzMAC != adminMAC {
		errs = append(errs, errors.New("authz and admin: ODIN_REDIS_MAC_SECRET differs: each would refuse the other's Redis entries"))
	}
	pg, redis, issuer := all["postgres"], all["redis"], all["issuer"]
	for _, name := range []string{"migrate", "authz", "admin"} {
		s, ok := all[name]
		if !ok {
			continue
		}
		errs = append(errs, checkDatabaseURL(name, envOfService(s, "ODIN_DATABASE_URL"), pg)...)
		if name == "migrate" {
			continue
		}
		for _, v := range []string{"ODIN_REDIS_URL", "ODIN_JWKS_URL", "ODIN_JWT_ISSUER"} {
			if envOfService(s, v) == "" {
				errs = append(errs, fmt.Errorf("%s: %s is not set", name, v))
			}
		}
		if u, err := url.Parse(envOfService(s, "ODIN_REDIS_URL")); err == nil && u.Host != "" && u.Host != redis.Name+":6379" {
			errs = append(errs, fmt.Errorf("%s: ODIN_REDIS_URL names %s, want the redis service (redis:6379)", name, u.Host))
		}
		jwks, err := url.Parse(envOfService(s, "ODIN_JWKS_URL"))
		if wantHost := issuer.Name + ":" + portOf(envOfService(issuer, "ODIN_DEVISSUER_ADDR")); err == nil && jwks.Host != "" && jwks.Host != wantHost {
			errs = append(errs, fmt.Errorf("%s: ODIN_JWKS_URL names %s, want the issuer service (%s)", name, jwks.Host, wantHost))
		}
		if got, want := envOfService(s, "ODIN_JWT_ISSUER"), envOfService(issuer, "ODIN_DEVISSUER_ISSUER"); got != "" && got != want {
			errs = append(errs, fmt.Errorf("%s: ODIN_JWT_ISSUER %q differs from the issuer's ODIN_DEVISSUER_ISSUER %q: every JWT would be refused", name, got, want))
		}
	}
	return errs
}

func checkDatabaseURL(name, raw string, pg types.ServiceConfig) []error {
	if raw == "" {
		return []error{fmt.Errorf("%s: ODIN_DATABASE_URL is not set", name)}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return []error{fmt.Errorf("%s: ODIN_DATABASE_URL: %v", name, err)}
	}
	pass, _ := u.User.Password()
	got := fmt.Sprintf("%s:%s@%s/%s", u.User.Username(), pass, u.Host, strings.TrimPrefix(u.Path, "/"))
	want := fmt.Sprintf("%s:%s@%s:5432/%s", envOfService(pg, "POSTGRES_USER"), envOfService(pg, "POSTGRES_PASSWORD"), pg.Name, envOfService(pg, "POSTGRES_DB"))
	if got != want {
		return []error{fmt.Errorf("%s: ODIN_DATABASE_URL does not match the postgres service (user, password, host, database)", name)}
	}
	return nil
}

// checkLoad: the load service drives this stack: gRPC to every authz
// replica, their ops ports for CPU and decisions, HTTP through Envoy, tokens
// from the issuer, keys seeded into the stack's database.
func checkLoad(all types.Services) []error {
	s, ok := all["load"]
	if !ok {
		return nil
	}
	var errs []error
	if s.Build == nil || s.Build.Target != "load" {
		errs = append(errs, errors.New("load: want the Dockerfile's load target"))
	}
	if s.NetworkMode != "" {
		errs = append(errs, fmt.Errorf("load: network_mode %q; it must be on the stack's network to reach authz and envoy", s.NetworkMode))
	}
	authz, envoy, issuer := all["authz"], all["envoy"], all["issuer"]
	want := map[string]string{
		"ODIN_LOAD_GRPC_TARGET": "authz:" + portOf(envOfService(authz, "ODIN_GRPC_ADDR")),
		"ODIN_LOAD_OPS_TARGET":  "authz:" + portOf(envOfService(authz, "ODIN_OPS_ADDR")),
		"ODIN_LOAD_PROXY_URL":   "http://envoy:" + strconv.Itoa(envoyListenerPort(envoy)),
		"ODIN_LOAD_MINT_URL":    "http://issuer:" + portOf(envOfService(issuer, "ODIN_DEVISSUER_ADDR")) + "/mint",
	}
	for v, w := range want {
		if got := envOfService(s, v); got != w {
			errs = append(errs, fmt.Errorf("load: %s is %q, want %q", v, got, w))
		}
	}
	errs = append(errs, checkDatabaseURL("load", envOfService(s, "ODIN_LOAD_DATABASE_URL"), all["postgres"])...)
	for _, dep := range []string{"envoy", "authz", "issuer"} {
		if d, ok := s.DependsOn[dep]; !ok || d.Condition != types.ServiceConditionHealthy {
			errs = append(errs, fmt.Errorf("load: must wait for %s to be healthy", dep))
		}
	}
	return errs
}

// checkBench: odin-load starting its own servers accepts loopback addresses
// only, so it must share a network namespace with its database.
func checkBench(all types.Services) []error {
	s, ok := all["bench"]
	if !ok {
		return nil
	}
	var errs []error
	if s.Build == nil || s.Build.Target != "load" {
		errs = append(errs, errors.New("bench: want the Dockerfile's load target"))
	}
	if !strings.HasPrefix(s.NetworkMode, types.ServicePrefix) {
		errs = append(errs, fmt.Errorf("bench: network_mode %q; odin-load needs its PostgreSQL and Redis on its loopback (network_mode: service:…)", s.NetworkMode))
	}
	for _, v := range []string{"ODIN_LOAD_DATABASE_URL", "ODIN_LOAD_REDIS_URL"} {
		u, err := url.Parse(envOfService(s, v))
		if ip := net.ParseIP(hostOf(u, err)); ip == nil || !ip.IsLoopback() {
			errs = append(errs, fmt.Errorf("bench: %s must be a loopback URL (odin-load refuses others)", v))
		}
	}
	if envOfService(s, "ODIN_LOAD_ODIN_BIN") == "" {
		errs = append(errs, errors.New("bench: ODIN_LOAD_ODIN_BIN is not set"))
	}
	return errs
}

func hostOf(u *url.URL, err error) string {
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// checkEnvoyService requires the Envoy service to mount, read-only, exactly
// the file the Envoy tests validate, and that file's clusters to name
// services and ports of this stack.
func checkEnvoyService(all types.Services, in composeInputs) []error {
	s, ok := all["envoy"]
	if !ok {
		return nil
	}
	var errs []error
	var mounts []types.ServiceVolumeConfig
	for _, v := range s.Volumes {
		if strings.HasPrefix(v.Target, "/etc/envoy") {
			mounts = append(mounts, v)
		}
	}
	want := filepath.Join(in.root, "envoy", composeEnvoyFile)
	if len(mounts) != 1 || mounts[0].Type != types.VolumeTypeBind || mounts[0].Target != envoyMountTarget || mounts[0].Source != want {
		return append(errs, fmt.Errorf("envoy: want exactly one bind mount ./envoy/%s:%s (the tested file), got %+v", composeEnvoyFile, envoyMountTarget, mounts))
	}
	m := mounts[0]
	if !m.ReadOnly {
		errs = append(errs, errors.New("envoy: mount the bootstrap read-only (:ro)"))
	}
	if filepath.Dir(m.Source) != filepath.Join(in.root, "envoy") || !slices.Contains(in.envoyFiles, filepath.Base(m.Source)) {
		return append(errs, fmt.Errorf("envoy: %s is not one of the files envoy/config_test.go validates (%v)", m.Source, in.envoyFiles))
	}
	data, err := os.ReadFile(m.Source)
	if err != nil {
		return append(errs, fmt.Errorf("envoy: %v", err))
	}
	b, err := parseBootstrap(data)
	if err == nil {
		err = checkBootstrap(b)
	}
	if err != nil {
		return append(errs, fmt.Errorf("envoy: %s: %v", m.Source, err))
	}

	// Every listener port is published, and Envoy's admin port is not.
	for _, l := range b.GetStaticResources().GetListeners() {
		port := l.GetAddress().GetSocketAddress().GetPortValue()
		if !slices.ContainsFunc(s.Ports, func(p types.ServicePortConfig) bool { return p.Target == port }) {
			errs = append(errs, fmt.Errorf("envoy: listener %s port %d is not published", l.GetName(), port))
		}
	}
	// Every DNS name a cluster resolves is a service listening on that port;
	// the ext_authz cluster is authz's gRPC port.
	authzCluster := extAuthzGRPCCluster(b.GetStaticResources().GetListeners())
	for _, c := range b.GetStaticResources().GetClusters() {
		for _, host := range clusterHosts(c) {
			svc, port := host.service, fmt.Sprint(host.port)
			target, ok := all[svc]
			if !ok {
				errs = append(errs, fmt.Errorf("envoy: cluster %s resolves %q, which is not a service", c.GetName(), svc))
				continue
			}
			if !slices.Contains(listenPorts(target), port) {
				errs = append(errs, fmt.Errorf("envoy: cluster %s calls %s:%s, a port %s does not listen on (%v)", c.GetName(), svc, port, svc, listenPorts(target)))
			}
			if c.GetName() == authzCluster && (svc != "authz" || port != portOf(envOfService(target, "ODIN_GRPC_ADDR"))) {
				errs = append(errs, fmt.Errorf("envoy: ext_authz cluster %s calls %s:%s, want authz on its ODIN_GRPC_ADDR port", c.GetName(), svc, port))
			}
		}
	}
	if authzCluster == "" {
		errs = append(errs, errors.New("envoy: the mounted file has no gRPC ext_authz filter"))
	}
	return errs
}

type clusterHost struct {
	service string
	port    uint32
}

// clusterHosts returns the DNS names (with ports) a cluster's endpoints name.
func clusterHosts(c *clusterv3.Cluster) []clusterHost {
	var out []clusterHost
	for _, e := range c.GetLoadAssignment().GetEndpoints() {
		for _, lb := range e.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			if net.ParseIP(sa.GetAddress()) == nil {
				out = append(out, clusterHost{sa.GetAddress(), sa.GetPortValue()})
			}
		}
	}
	return out
}

// extAuthzGRPCCluster returns the cluster a gRPC ext_authz filter calls.
func extAuthzGRPCCluster(listeners []*listenerv3.Listener) string {
	for _, l := range listeners {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				h := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().UnmarshalTo(h) != nil {
					continue
				}
				for _, hf := range h.GetHttpFilters() {
					e := &extauthzv3.ExtAuthz{}
					if hf.GetTypedConfig().UnmarshalTo(e) == nil {
						if c := e.GetGrpcService().GetEnvoyGrpc().GetClusterName(); c != "" {
							return c
						}
					}
				}
			}
		}
	}
	return ""
}

// listenPorts are the ports a service is known to listen on: exposed,
// published, and those of its ODIN_*_ADDR settings.
func listenPorts(s types.ServiceConfig) []string {
	ports := append([]string{}, s.Expose...)
	for _, p := range s.Ports {
		ports = append(ports, fmt.Sprint(p.Target))
	}
	for k, v := range s.Environment {
		if strings.HasPrefix(k, "ODIN_") && strings.HasSuffix(k, "_ADDR") && v != nil {
			ports = append(ports, portOf(*v))
		}
	}
	return ports
}

// portOf returns the port of a listen address such as ":9001".
func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return port
}

func envOfService(s types.ServiceConfig, name string) string {
	if v := s.Environment[name]; v != nil {
		return *v
	}
	return ""
}

func envOf(p *types.Project, service, name string) string {
	s, err := p.GetService(service)
	if err != nil {
		return ""
	}
	return envOfService(s, name)
}

// composeEdit breaks a copy of the compose file, given as the generic
// document (anchors and merge keys already expanded).
type composeEdit func(t *testing.T, doc map[string]any)

// node walks doc along path and returns the map there; the test fails when
// the path is missing, so an edit can never silently do nothing.
func node(t *testing.T, doc map[string]any, path ...string) map[string]any {
	t.Helper()
	cur := doc
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			t.Fatalf("compose file has no %s", strings.Join(path, "."))
		}
		cur = next
	}
	return cur
}

// set sets path[len-1] in the map at path[:len-1], which must exist.
func set(path string, v any) composeEdit {
	return func(t *testing.T, doc map[string]any) {
		parts := strings.Split(path, ".")
		m := node(t, doc, parts[:len(parts)-1]...)
		m[parts[len(parts)-1]] = v
	}
}

// del deletes path, which must exist.
func del(path string) composeEdit {
	return func(t *testing.T, doc map[string]any) {
		parts := strings.Split(path, ".")
		m := node(t, doc, parts[:len(parts)-1]...)
		if _, ok := m[parts[len(parts)-1]]; !ok {
			t.Fatalf("compose file has no %s", path)
		}
		delete(m, parts[len(parts)-1])
	}
}

func edits(e ...composeEdit) composeEdit {
	return func(t *testing.T, doc map[string]any) {
		for _, f := range e {
			f(t, doc)
		}
	}
}

func TestComposeBrokenCopiesFail(t *testing.T) {
	data, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	in := newComposeInputs(t)
	healthy := map[string]any{"condition": "service_healthy"}
	for _, tc := range []struct {
		name string
		edit composeEdit
		want string // in the error
	}{
		// Services.
		{"missing service", del("services.load"), `service "load" is missing`},
		{"missing upstream", edits(del("services.upstream"), del("services.envoy.depends_on.upstream")), `resolves "upstream", which is not a service`},
		{"missing issuer", del("services.issuer"), `undefined service "issuer"`},
		{"load runs by default", del("services.load.profiles"), "profiles []"},
		{"bench runs by default", edits(del("services.bench.profiles"), del("services.bench-postgres.profiles"), del("services.bench-redis.profiles")), "profiles []"},
		{"upstream only in a profile", edits(set("services.upstream.profiles", []any{"extra"}), del("services.envoy.depends_on.upstream")), `"upstream" does not start`},
		{"authz only in a profile", set("services.authz.profiles", []any{"extra"}), `undefined service "authz"`},
		{"unknown key", set("services.authz.replica", 2), "replica"},
		// Dependencies.
		{"dependency on an unknown service", set("services.authz.depends_on.cache", healthy), `undefined service "cache"`},
		{"authz before migrations", set("services.authz.depends_on.migrate.condition", "service_started"), "authz: depends on migrate with condition service_started"},
		{"admin without redis", del("services.admin.depends_on.redis"), "admin: does not depend on redis"},
		{"envoy not waiting for authz", del("services.envoy.depends_on.authz"), "envoy: does not depend on authz"},
		{"migrate restarts", set("services.migrate.restart", "on-failure"), "restarts"},
		{"healthy wait on no health check", del("services.redis.healthcheck"), "redis has no health check"},
		// Health checks.
		{"authz probes the wrong port", set("services.authz.healthcheck.test", []any{"CMD", "/odin", "healthcheck", "--url", "http://127.0.0.1:9002/readyz"}), "ODIN_OPS_ADDR port 9003"},
		{"shell health check in distroless", set("services.admin.healthcheck.test", []any{"CMD-SHELL", "curl -f http://127.0.0.1:9004/readyz"}), "the image has no shell"},
		{"postgres probe", set("services.postgres.healthcheck.test", []any{"CMD", "true"}), "pg_isready"},
		// Envoy.
		{"wrong Envoy file", set("services.envoy.volumes", []any{"./envoy/envoy-http.yaml:/etc/envoy/envoy.yaml:ro"}), "want exactly one bind mount ./envoy/envoy-grpc.yaml"},
		{"untested Envoy file", set("services.envoy.volumes", []any{"./envoy.yaml:/etc/envoy/envoy.yaml:ro"}), "want exactly one bind mount"},
		{"Envoy file writable", set("services.envoy.volumes", []any{"./envoy/envoy-grpc.yaml:/etc/envoy/envoy.yaml"}), "read-only"},
		{"Envoy listener not published", set("services.envoy.ports", []any{"127.0.0.1:8080:8080"}), "listener ingress_http port 8000 is not published"},
		{"Envoy admin published", set("services.envoy.ports", []any{"127.0.0.1:8000:8000", "127.0.0.1:9901:9901"}), "envoy: publishes port 9901"},
		{"authz gRPC port moved", set("services.authz.environment.ODIN_GRPC_ADDR", ":9011"), "odin_authz calls authz:9001"},
		// Ports.
		{"postgres published", set("services.postgres.ports", []any{"5432:5432"}), "postgres: publishes port 5432"},
		{"admin on every interface", set("services.admin.ports", []any{"9004:9004"}), `publishes port 9004 on ""`},
		// Images.
		{"latest tag", set("services.redis.image", "redis:latest"), "redis: image redis:latest: a moving"},
		{"moving Envoy tag", set("services.envoy.image", "envoyproxy/envoy:v1.36-latest"), "a moving"},
		{"untagged image", set("services.upstream.image", "mendhak/http-https-echo"), "no tag"},
		{"unknown build target", set("services.load.build.target", "loadgen"), `build target "loadgen"`},
		// Settings.
		{"one authz replica", set("services.authz.deploy.replicas", 1), "deploy.replicas >= 2"},
		{"authz without Redis", del("services.authz.environment.ODIN_REDIS_URL"), "authz: ODIN_REDIS_URL is not set"},
		{"authz without Redis MAC secret", del("services.authz.environment.ODIN_REDIS_MAC_SECRET"), "authz: ODIN_REDIS_MAC_SECRET must be at least 32 bytes"},
		{"Redis MAC secrets differ", set("services.admin.environment.ODIN_REDIS_MAC_SECRET", "another-secret-of-at-least-32-bytes-long"), "ODIN_REDIS_MAC_SECRET differs"},
		{"authz without JWKS", del("services.authz.environment.ODIN_JWKS_URL"), "authz: ODIN_JWKS_URL is not set"},
		{"issuer mismatch", set("services.admin.environment.ODIN_JWT_ISSUER", "https://clerk.example.com"), "every JWT would be refused"},
		{"JWKS elsewhere", set("services.authz.environment.ODIN_JWKS_URL", "http://issuer:9999/.well-known/jwks.json"), "want the issuer service"},
		{"database password mismatch", set("services.postgres.environment.POSTGRES_PASSWORD", "another"), "does not match the postgres service"},
		{"short admin token", set("services.admin.environment.ODIN_ADMIN_TOKEN", "dev"), "at least 32 characters"},
		{"authz does not restart", set("services.authz.restart", "no"), `authz: restart "no"`},
		{"bench over the network", set("services.bench.environment.ODIN_LOAD_DATABASE_URL", "postgres://odin:x@postgres:5432/odin"), "loopback URL"},
		{"load misses a replica port", set("services.load.environment.ODIN_LOAD_GRPC_TARGET", "authz:9011"), `want "authz:9001"`},
		{"load bypasses Envoy", set("services.load.environment.ODIN_LOAD_PROXY_URL", "http://upstream:8080"), `want "http://envoy:8000"`},
		{"load seeds elsewhere", set("services.load.environment.ODIN_LOAD_DATABASE_URL", "postgres://odin:x@postgres:5432/other"), "does not match the postgres service"},
		{"load does not wait for envoy", del("services.load.depends_on.envoy"), "wait for envoy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, err := yaml.YAMLToJSON(data)
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := json.Unmarshal(js, &doc); err != nil {
				t.Fatal(err)
			}
			tc.edit(t, doc)
			broken, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			p, err := loadCompose(t.Context(), broken, nil)
			if err == nil {
				err = checkCompose(p, in)
			}
			if err == nil {
				t.Fatalf("broken copy passed; want an error mentioning %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not mention %q:\n%v", tc.want, err)
			}
		})
	}
}

// TestComposeRoundTripPasses makes sure the broken copies above fail for
// their edit, not for the YAML to JSON round trip they go through.
func TestComposeRoundTripPasses(t *testing.T) {
	data, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	p, err := loadCompose(t.Context(), js, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkCompose(p, newComposeInputs(t)); err != nil {
		t.Fatal(err)
	}
}

// envoyListenerPort is the container port the Envoy service publishes: its
// listener (checkEnvoyService ties the two together).
func envoyListenerPort(s types.ServiceConfig) int {
	if len(s.Ports) == 0 {
		return 0
	}
	return int(s.Ports[0].Target)
}

// The compose table of envoy/README.md names every service of the compose
// file, in every profile, and no other.
func TestComposeTableMatchesServices(t *testing.T) {
	data, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]any `json:"services"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Docker compose\n")
	if !ok {
		t.Fatal("envoy/README.md has no \"## Docker compose\" section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9-]+)`")
	documented := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		documented[m[1]] = true
		if _, ok := doc.Services[m[1]]; !ok {
			t.Errorf("envoy/README.md's compose table names %q, which docker-compose.yml does not have", m[1])
		}
	}
	for name := range doc.Services {
		if !documented[name] {
			t.Errorf("docker-compose.yml has service %q, missing from envoy/README.md's compose table", name)
		}
	}
}
