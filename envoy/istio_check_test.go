package envoy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	securityv1beta1 "istio.io/api/security/v1beta1"
	"sigs.k8s.io/yaml"
)

// manifest is one YAML document of a file under istio/, decoded generically
// so tests can break it before it is checked.
type manifest struct {
	file string
	doc  map[string]any
}

// workloadWant is what each shipped Deployment must look like.
type workloadWant struct {
	command     string // the `odin` subcommand in args
	opsPort     int    // where /readyz and /healthz are served
	minReplicas int
}

var wantWorkloads = map[string]workloadWant{
	"odin-authz": {command: "authz", opsPort: 9003, minReplicas: 2},
	"odin-admin": {command: "admin", opsPort: 9004, minReplicas: 1},
}

// secretEnv are the variables that carry secrets: they must come from a
// Secret, never a literal in the manifest.
var secretEnv = []string{"ODIN_DATABASE_URL", "ODIN_REDIS_URL", "ODIN_REDIS_MAC_SECRET", "ODIN_ADMIN_TOKEN", "ODIN_WEBHOOK_SECRET"}

// meshRootNamespace is Istio's default root namespace, where a policy without
// a selector applies to the whole mesh.
const meshRootNamespace = "istio-system"

// loadManifests reads every document of every YAML file under istio/.
func loadManifests(t *testing.T) []manifest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("istio", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Istio manifests found (err %v)", err)
	}
	var ms []manifest
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, part := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
			var doc map[string]any
			if err := yaml.Unmarshal([]byte(part), &doc); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			if doc != nil {
				ms = append(ms, manifest{file: f, doc: doc})
			}
		}
	}
	return ms
}

// istioSet is the decoded manifests, by kind.
type istioSet struct {
	namespaces      []string
	serviceAccounts []string // namespace/name
	deployments     []deployment
	jobs            []job
	services        []service
	pdbs            []k8sObject
	policies        []k8sObject
	meshConfigs     []k8sObject
}

// checkManifests decodes the manifests and checks them one by one and against
// each other. It reports every problem it finds.
func checkManifests(ms []manifest) error {
	var errs []error
	var set istioSet
	for _, m := range ms {
		var o k8sObject
		js, err := json.Marshal(m.doc)
		if err == nil {
			err = json.Unmarshal(js, &o)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.file, err))
			continue
		}
		o.file = m.file
		if err := strictDecode(o.Kind, js); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", o, err))
		}
		switch o.Kind {
		case "Namespace":
			set.namespaces = append(set.namespaces, o.Metadata.Name)
		case "ServiceAccount":
			set.serviceAccounts = append(set.serviceAccounts, o.Metadata.Namespace+"/"+o.Metadata.Name)
		case "Deployment":
			d := deployment{k8sObject: o}
			errs = appendErr(errs, o, json.Unmarshal(o.Spec, &d.spec))
			set.deployments = append(set.deployments, d)
		case "Job":
			j := job{k8sObject: o}
			errs = appendErr(errs, o, json.Unmarshal(o.Spec, &j.spec))
			set.jobs = append(set.jobs, j)
		case "Service":
			s := service{k8sObject: o}
			errs = appendErr(errs, o, json.Unmarshal(o.Spec, &s.spec))
			set.services = append(set.services, s)
		case "PodDisruptionBudget":
			set.pdbs = append(set.pdbs, o)
		case "AuthorizationPolicy":
			set.policies = append(set.policies, o)
		case "IstioOperator":
			set.meshConfigs = append(set.meshConfigs, o)
		default:
			errs = append(errs, fmt.Errorf("%s: unexpected kind; add a check for it", o))
		}
	}
	for _, d := range set.deployments {
		errs = append(errs, set.checkDeployment(d)...)
	}
	errs = append(errs, set.checkMigrationJob()...)
	for _, s := range set.services {
		errs = append(errs, set.checkService(s)...)
	}
	for _, p := range set.pdbs {
		errs = append(errs, set.checkPDB(p)...)
	}
	providers, perrs := set.checkMeshConfig()
	errs = append(errs, perrs...)
	errs = append(errs, set.checkPolicies(providers)...)
	return errors.Join(errs...)
}

func appendErr(errs []error, o k8sObject, err error) []error {
	if err != nil {
		return append(errs, fmt.Errorf("%s: %w", o, err))
	}
	return errs
}

// checkNamespace reports an object placed in a namespace the manifests do not
// create (Istio's own namespace excepted).
func (s *istioSet) checkNamespace(o k8sObject) error {
	if o.Metadata.Namespace == meshRootNamespace || slices.Contains(s.namespaces, o.Metadata.Namespace) {
		return nil
	}
	return fmt.Errorf("%s: namespace %q is not created by these manifests", o, o.Metadata.Namespace)
}

func (s *istioSet) checkDeployment(d deployment) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{d}, args...)...))
	}
	if err := s.checkNamespace(d.k8sObject); err != nil {
		errs = append(errs, err)
	}
	want, ok := wantWorkloads[d.Metadata.Name]
	if !ok {
		fail("unexpected Deployment; add it to wantWorkloads")
		return errs
	}
	spec := d.spec
	if spec.Replicas == nil || *spec.Replicas < want.minReplicas {
		fail("replicas must be at least %d", want.minReplicas)
	}
	if len(spec.Selector.MatchLabels) == 0 || !subset(spec.Selector.MatchLabels, spec.Template.Metadata.Labels) {
		fail("selector %v does not match the pod labels %v", spec.Selector.MatchLabels, spec.Template.Metadata.Labels)
	}
	if sa := spec.Template.Spec.ServiceAccountName; sa == "" || !slices.Contains(s.serviceAccounts, d.Metadata.Namespace+"/"+sa) {
		fail("serviceAccountName %q is not a ServiceAccount of these manifests", sa)
	}
	if len(spec.Template.Spec.Containers) != 1 {
		fail("want exactly one container (Istio injects the sidecar), got %d", len(spec.Template.Spec.Containers))
		return errs
	}
	return append(errs, checkContainer(d, want, spec.Template.Spec.SecurityContext)...)
}

// checkContainer checks the odin container of a Deployment: command, security
// context, resources, probes and environment.
func checkContainer(d deployment, want workloadWant, pod *securityContext) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{d}, args...)...))
	}
	c := d.spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, want.command) {
		fail("args %v do not run `odin %s`", c.Args, want.command)
	}
	// A container's own setting overrides the pod's.
	var nonRoot *bool
	if pod != nil {
		nonRoot = pod.RunAsNonRoot
	}
	if c.SecurityContext != nil && c.SecurityContext.RunAsNonRoot != nil {
		nonRoot = c.SecurityContext.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		fail("runAsNonRoot must be true")
	}
	if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		fail("allowPrivilegeEscalation must be false")
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" {
		fail("resources.requests must set cpu and memory")
	}
	for _, pr := range []struct {
		name string
		p    *probe
		path string
	}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
		if pr.p == nil || pr.p.HTTPGet == nil {
			fail("%s must be an httpGet of %s", pr.name, pr.path)
			continue
		}
		if pr.p.HTTPGet.Path != pr.path {
			fail("%s path is %q, want %q", pr.name, pr.p.HTTPGet.Path, pr.path)
		}
		switch port, ok := c.resolve(pr.p.HTTPGet.Port); {
		case !ok:
			fail("%s port %v is not a port the container declares", pr.name, pr.p.HTTPGet.Port)
		case port != want.opsPort:
			fail("%s port %v resolves to %d, want the ops port %d", pr.name, pr.p.HTTPGet.Port, port, want.opsPort)
		}
	}
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
		fromSecret := e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name != "" && e.ValueFrom.SecretKeyRef.Key != ""
		if slices.Contains(secretEnv, e.Name) && !fromSecret {
			fail("%s must come from a Secret (valueFrom.secretKeyRef)", e.Name)
		}
		if strings.HasSuffix(e.Name, "_ADDR") {
			n, err := strconv.Atoi(e.Value[strings.LastIndex(e.Value, ":")+1:])
			if _, ok := c.resolve(portRef{number: n}); err != nil || !ok {
				fail("%s=%q listens on a port the container does not declare", e.Name, e.Value)
			}
		}
	}
	for _, name := range []string{"ODIN_DATABASE_URL", "ODIN_REDIS_URL"} {
		if !env[name] {
			fail("%s is not set", name)
		}
	}
	if env["ODIN_REDIS_URL"] && !env["ODIN_REDIS_MAC_SECRET"] {
		fail("ODIN_REDIS_MAC_SECRET is not set: odin refuses to start with Redis and no MAC secret")
	}
	return errs
}

// checkMigrationJob checks the Job running `odin migrate`: the image of the
// Deployments, their database Secret, no sidecar (or it never completes).
func (s *istioSet) checkMigrationJob() []error {
	if len(s.jobs) != 1 {
		return []error{fmt.Errorf("want exactly one Job (odin migrate), got %d", len(s.jobs))}
	}
	j := s.jobs[0]
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{j}, args...)...))
	}
	if err := s.checkNamespace(j.k8sObject); err != nil {
		errs = append(errs, err)
	}
	spec := j.spec.Template
	if rp := spec.Spec.RestartPolicy; rp != "Never" && rp != "OnFailure" {
		fail("restartPolicy %q: a Job's pods need Never or OnFailure", rp)
	}
	if spec.Metadata.Labels["sidecar.istio.io/inject"] != "false" {
		fail("an Istio sidecar keeps running after odin migrate exits, so the Job never completes: label the pod sidecar.istio.io/inject: \"false\"")
	}
	if len(spec.Spec.Containers) != 1 {
		fail("want exactly one container, got %d", len(spec.Spec.Containers))
		return errs
	}
	c := spec.Spec.Containers[0]
	if !slices.Equal(c.Args, []string{"migrate"}) {
		fail("args %v do not run `odin migrate`", c.Args)
	}
	nonRoot := spec.Spec.SecurityContext != nil && spec.Spec.SecurityContext.RunAsNonRoot != nil && *spec.Spec.SecurityContext.RunAsNonRoot
	if c.SecurityContext != nil && c.SecurityContext.RunAsNonRoot != nil {
		nonRoot = *c.SecurityContext.RunAsNonRoot
	}
	if !nonRoot {
		fail("runAsNonRoot must be true")
	}
	if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		fail("allowPrivilegeEscalation must be false")
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" {
		fail("resources.requests must set cpu and memory")
	}
	dbSecret := func(c container) string {
		for _, e := range c.Env {
			if e.Name == "ODIN_DATABASE_URL" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				return e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
			}
		}
		return ""
	}
	want := dbSecret(c)
	if want == "" {
		fail("ODIN_DATABASE_URL must come from a Secret (valueFrom.secretKeyRef)")
	}
	for _, d := range s.deployments {
		if len(d.spec.Template.Spec.Containers) != 1 {
			continue // reported by checkDeployment
		}
		dc := d.spec.Template.Spec.Containers[0]
		if got := dbSecret(dc); want != "" && got != want {
			fail("migrates the database of Secret %s, but %s reads %s", want, d, got)
		}
		if dc.Image != c.Image {
			fail("image %s is not the image %s of %s: migrate with the release you deploy", c.Image, dc.Image, d)
		}
	}
	return errs
}

// deploymentFor returns the Deployment in ns whose pods carry the labels sel selects.
func (s *istioSet) deploymentFor(ns string, sel map[string]string) (deployment, bool) {
	for _, d := range s.deployments {
		if d.Metadata.Namespace == ns && len(sel) > 0 && subset(sel, d.spec.Template.Metadata.Labels) {
			return d, true
		}
	}
	return deployment{}, false
}

func (s *istioSet) checkService(svc service) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{svc}, args...)...))
	}
	if err := s.checkNamespace(svc.k8sObject); err != nil {
		errs = append(errs, err)
	}
	d, ok := s.deploymentFor(svc.Metadata.Namespace, svc.spec.Selector)
	if !ok {
		fail("selector %v selects no Deployment", svc.spec.Selector)
		return errs
	}
	if len(d.spec.Template.Spec.Containers) == 0 {
		return errs // reported by checkDeployment
	}
	c := d.spec.Template.Spec.Containers[0]
	for _, p := range svc.spec.Ports {
		target := p.TargetPort
		if target.name == "" && target.number == 0 {
			target.number = p.Port
		}
		if _, ok := c.resolve(target); !ok {
			fail("port %q: targetPort %v is not a port of %s", p.Name, target, d)
		}
		if p.AppProtocol == "" {
			fail("port %q: set appProtocol so Istio knows the protocol", p.Name)
		}
	}
	return errs
}

func (s *istioSet) checkPDB(o k8sObject) []error {
	var spec pdbSpec
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return []error{fmt.Errorf("%s: %w", o, err)}
	}
	d, ok := s.deploymentFor(o.Metadata.Namespace, spec.Selector.MatchLabels)
	if !ok {
		return []error{fmt.Errorf("%s: selects no Deployment", o)}
	}
	if d.spec.Replicas == nil || spec.MinAvailable.name != "" || spec.MinAvailable.number >= *d.spec.Replicas {
		return []error{fmt.Errorf("%s: minAvailable %v must be a number below the %s replicas, or nodes can never drain", o, spec.MinAvailable, d)}
	}
	return nil
}

// extAuthzProvider is the part of an envoyExtAuthz{Grpc,Http} provider the
// checks share.
type extAuthzProvider struct {
	kind, service string
	port          uint32
}

// checkMeshConfig checks the extension providers and returns the ext_authz
// ones by name.
func (s *istioSet) checkMeshConfig() (map[string]extAuthzProvider, []error) {
	var errs []error
	providers := map[string]extAuthzProvider{}
	if len(s.meshConfigs) != 1 {
		errs = append(errs, fmt.Errorf("want exactly one IstioOperator with the meshConfig, got %d", len(s.meshConfigs)))
	}
	for _, o := range s.meshConfigs {
		var spec struct {
			MeshConfig json.RawMessage `json:"meshConfig"`
		}
		mc := &meshv1alpha1.MeshConfig{}
		err := json.Unmarshal(o.Spec, &spec)
		if err == nil {
			err = protojson.Unmarshal(spec.MeshConfig, mc)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: meshConfig: %w", o, err))
			continue
		}
		for _, p := range mc.GetExtensionProviders() {
			fail := func(format string, args ...any) {
				errs = append(errs, fmt.Errorf("%s: extension provider %q: "+format, append([]any{o, p.GetName()}, args...)...))
			}
			if _, dup := providers[p.GetName()]; dup || p.GetName() == "" {
				fail("name is empty or used twice")
			}
			var got extAuthzProvider
			var timeout interface{ AsDuration() time.Duration }
			var failOpen bool
			var statusOnError string
			switch {
			case p.GetEnvoyExtAuthzGrpc() != nil:
				g := p.GetEnvoyExtAuthzGrpc()
				got = extAuthzProvider{"envoyExtAuthzGrpc", g.GetService(), g.GetPort()}
				timeout, failOpen, statusOnError = g.GetTimeout(), g.GetFailOpen(), g.GetStatusOnError()
			case p.GetEnvoyExtAuthzHttp() != nil:
				h := p.GetEnvoyExtAuthzHttp()
				got = extAuthzProvider{"envoyExtAuthzHttp", h.GetService(), h.GetPort()}
				timeout, failOpen, statusOnError = h.GetTimeout(), h.GetFailOpen(), h.GetStatusOnError()
				if h.GetPathPrefix() != "" {
					fail("pathPrefix must be empty; the server reads the original path")
				}
			default:
				continue // not an ext_authz provider (tracing, logging)
			}
			providers[p.GetName()] = got
			if d := timeout.AsDuration(); d < minAuthzTimeout || d > maxAuthzTimeout {
				fail("timeout %v is unset or outside [%v, %v] (Istio's default is 600s)", d, minAuthzTimeout, maxAuthzTimeout)
			}
			if failOpen {
				fail("failOpen must be false")
			}
			if statusOnError != "503" {
				fail("statusOnError is %q, want \"503\"", statusOnError)
			}
			if err := s.checkProviderService(got); err != nil {
				fail("%v", err)
			}
		}
	}
	return providers, errs
}

// providerService finds the Service a provider's `[<namespace>/]<name>.<namespace>.svc.cluster.local`
// names.
func (s *istioSet) providerService(p extAuthzProvider) (service, error) {
	host := p.service
	if _, h, ok := strings.Cut(host, "/"); ok {
		host = h
	}
	name, ns, ok := strings.Cut(strings.TrimSuffix(host, ".svc.cluster.local"), ".")
	if !ok || !strings.HasSuffix(host, ".svc.cluster.local") {
		return service{}, fmt.Errorf("service %q is not a <name>.<namespace>.svc.cluster.local name", p.service)
	}
	for _, svc := range s.services {
		if svc.Metadata.Name == name && svc.Metadata.Namespace == ns {
			return svc, nil
		}
	}
	return service{}, fmt.Errorf("no Service %s in namespace %s", name, ns)
}

// providerBackend returns the Deployment serving a provider.
func (s *istioSet) providerBackend(p extAuthzProvider) (deployment, bool) {
	svc, err := s.providerService(p)
	if err != nil {
		return deployment{}, false
	}
	return s.deploymentFor(svc.Metadata.Namespace, svc.spec.Selector)
}

// checkProviderService checks that a provider's service and port are a
// Service of these manifests speaking the provider's protocol.
func (s *istioSet) checkProviderService(p extAuthzProvider) error {
	svc, err := s.providerService(p)
	if err != nil {
		return err
	}
	wantProto := map[string]string{"envoyExtAuthzGrpc": "grpc", "envoyExtAuthzHttp": "http"}[p.kind]
	for _, sp := range svc.spec.Ports {
		if uint32(sp.Port) == p.port {
			if sp.AppProtocol != wantProto {
				return fmt.Errorf("port %d of %s speaks %q, the provider needs %q", p.port, svc, sp.AppProtocol, wantProto)
			}
			return nil
		}
	}
	return fmt.Errorf("port %d is not a port of %s", p.port, svc)
}

// checkPolicies checks the AuthorizationPolicies: a CUSTOM policy needs a
// known provider and rules, and must not cover the authz server itself.
func (s *istioSet) checkPolicies(providers map[string]extAuthzProvider) []error {
	var errs []error
	var custom int
	for _, o := range s.policies {
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: "+format, append([]any{o}, args...)...))
		}
		if err := s.checkNamespace(o); err != nil {
			errs = append(errs, err)
		}
		ap := &securityv1beta1.AuthorizationPolicy{}
		if err := protojson.Unmarshal(o.Spec, ap); err != nil {
			fail("%v", err)
			continue
		}
		if ap.GetAction() != securityv1beta1.AuthorizationPolicy_CUSTOM {
			continue
		}
		custom++
		name := ap.GetProvider().GetName()
		p, ok := providers[name]
		switch {
		case name == "":
			fail("action CUSTOM needs provider.name")
		case !ok:
			fail("provider %q is not an ext_authz extension provider of the meshConfig (have %v)", name, slices.Sorted(maps.Keys(providers)))
		}
		if len(ap.GetRules()) == 0 {
			fail("CUSTOM policy has no rules, so it matches no request; use rules: [{}] to match all")
		}
		sel := ap.GetSelector().GetMatchLabels()
		if len(sel) == 0 && len(ap.GetTargetRefs()) == 0 && ap.GetTargetRef() == nil {
			fail("CUSTOM policy has no selector or targetRefs, so it covers the whole namespace%s, the authz server's pods included",
				map[bool]string{true: " (here: the whole mesh)"}[o.Metadata.Namespace == meshRootNamespace])
		}
		if d, ok := s.providerBackend(p); ok && len(sel) > 0 && subset(sel, d.spec.Template.Metadata.Labels) &&
			(o.Metadata.Namespace == meshRootNamespace || o.Metadata.Namespace == d.Metadata.Namespace) {
			fail("selector %v selects the authz server %s itself", sel, d)
		}
	}
	if custom == 0 {
		errs = append(errs, errors.New("no AuthorizationPolicy with action CUSTOM"))
	}
	return errs
}

func subset(sub, super map[string]string) bool {
	for k, v := range sub {
		if super[k] != v {
			return false
		}
	}
	return true
}
