package helm_test

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	securityv1beta1 "istio.io/api/security/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// expect is what a rendering must satisfy beyond the chart's own invariants.
type expect struct {
	// Secrets the chart may reference without rendering them (existingSecret).
	externalSecrets []string
	// ConfigMaps likewise (policy.existingConfigMap).
	externalConfigMaps []string
	// The Istio extension provider the AuthorizationPolicy must name.
	provider string
	redis    bool
}

// workload is what each odin Deployment runs and where it answers probes.
type workload struct {
	command string
	opsPort string // the container port name of /healthz and /readyz
}

var workloads = map[string]workload{
	"authz": {command: "authz", opsPort: "http-ops"},
	"admin": {command: "admin", opsPort: "http"},
}

// secretEnv are the variables that carry secrets.
var secretEnv = []string{"ODIN_DATABASE_URL", "ODIN_REDIS_URL", "ODIN_REDIS_MAC_SECRET",
	"ODIN_REDIS_MAC_SECRET_PREVIOUS", "ODIN_ADMIN_TOKEN", "ODIN_WEBHOOK_SECRET",
	"ODIN_OUTGOING_WEBHOOK_SECRET", "ODIN_GITHUB_SECRET_SCANNING_TOKEN"}

// chartSet is a decoded rendering, by kind.
type chartSet struct {
	all             []object
	deployments     []object
	services        []object
	secrets         []object
	configMaps      []object
	serviceAccounts []object
	jobs            []object
	pdbs            []object
	hpas            []object
	netpols         []object
	monitors        []object
	policies        []object
}

func newChartSet(objs []object) chartSet {
	s := chartSet{all: objs}
	for _, o := range objs {
		switch o.obj.(type) {
		case *appsv1.Deployment:
			s.deployments = append(s.deployments, o)
		case *corev1.Service:
			s.services = append(s.services, o)
		case *corev1.Secret:
			s.secrets = append(s.secrets, o)
		case *corev1.ConfigMap:
			s.configMaps = append(s.configMaps, o)
		case *corev1.ServiceAccount:
			s.serviceAccounts = append(s.serviceAccounts, o)
		case *batchv1.Job:
			s.jobs = append(s.jobs, o)
		case *policyv1.PodDisruptionBudget:
			s.pdbs = append(s.pdbs, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			s.hpas = append(s.hpas, o)
		case *networkingv1.NetworkPolicy:
			s.netpols = append(s.netpols, o)
		case *monitoringv1.ServiceMonitor:
			s.monitors = append(s.monitors, o)
		case *authorizationPolicy:
			s.policies = append(s.policies, o)
		}
	}
	return s
}

// checkChart checks a rendering on its own and against what it must
// satisfy, and reports every problem.
func checkChart(s chartSet, want expect) error {
	var errs []error
	seen := map[string]bool{}
	for _, o := range s.all {
		id := o.kind + " " + o.meta.Namespace + "/" + o.meta.Name
		if seen[id] {
			errs = append(errs, fmt.Errorf("%s rendered twice", id))
		}
		seen[id] = true
	}
	for _, d := range s.deployments {
		errs = append(errs, s.checkDeployment(d, want)...)
	}
	for _, svc := range s.services {
		errs = append(errs, s.checkService(svc)...)
	}
	for _, p := range s.pdbs {
		errs = append(errs, s.checkPDB(p)...)
	}
	for _, h := range s.hpas {
		errs = append(errs, s.checkHPA(h)...)
	}
	for _, n := range s.netpols {
		errs = append(errs, s.checkNetworkPolicy(n)...)
	}
	for _, m := range s.monitors {
		errs = append(errs, s.checkServiceMonitor(m)...)
	}
	errs = append(errs, s.checkMigration(want)...)
	for _, p := range s.policies {
		errs = append(errs, checkAuthorizationPolicy(p, s, want)...)
	}
	return errors.Join(errs...)
}

type failer struct {
	o    object
	errs []error
}

func (f *failer) fail(format string, args ...any) {
	f.errs = append(f.errs, fmt.Errorf("%s: "+format, append([]any{f.o}, args...)...))
}

func selects(sel map[string]string, podLabels map[string]string) bool {
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(podLabels))
}

// deploymentFor returns the Deployment whose pods sel selects.
func (s chartSet) deploymentFor(sel map[string]string) (*appsv1.Deployment, bool) {
	for _, o := range s.deployments {
		d := o.obj.(*appsv1.Deployment)
		if selects(sel, d.Spec.Template.Labels) {
			return d, true
		}
	}
	return nil, false
}

// containerPort resolves a port name or number to a container port.
func containerPort(c corev1.Container, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

// secretHasKey reports whether the chart renders Secret name (a regular
// object, not a hook) with key, or name is external.
func (s chartSet) secretHasKey(name, key string, want expect, hook bool) bool {
	if slices.Contains(want.externalSecrets, name) {
		return true
	}
	for _, o := range s.secrets {
		sec := o.obj.(*corev1.Secret)
		if o.meta.Name == name && o.hook == hook {
			_, ok := sec.Data[key]
			_, okString := sec.StringData[key]
			return ok || okString
		}
	}
	return false
}

func (s chartSet) checkDeployment(o object, want expect) []error {
	f := &failer{o: o}
	d := o.obj.(*appsv1.Deployment)
	w, ok := workloads[o.meta.Labels["app.kubernetes.io/component"]]
	if !ok {
		f.fail("unexpected component %q", o.meta.Labels["app.kubernetes.io/component"])
		return f.errs
	}
	pod := d.Spec.Template.Spec
	if d.Spec.Selector == nil || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		f.fail("selector does not match the pod labels %v", d.Spec.Template.Labels)
	}
	if !slices.ContainsFunc(s.serviceAccounts, func(sa object) bool { return sa.meta.Name == pod.ServiceAccountName }) {
		f.fail("serviceAccountName %q is not rendered", pod.ServiceAccountName)
	}
	for _, a := range []string{"checksum/secret", "checksum/policy"} {
		if d.Spec.Template.Annotations[a] == "" {
			f.fail("pod annotation %s is missing: a changed Secret or policy would not roll the pods", a)
		}
	}
	for _, tsc := range pod.TopologySpreadConstraints {
		if tsc.LabelSelector == nil || !selects(tsc.LabelSelector.MatchLabels, d.Spec.Template.Labels) {
			f.fail("topology spread on %s does not select the pods", tsc.TopologyKey)
		}
	}
	if len(pod.TopologySpreadConstraints) == 0 && pod.Affinity == nil {
		f.fail("neither topology spread nor affinity: every replica may land on one node")
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		f.fail("pod runAsNonRoot must be true")
	}
	if len(pod.Containers) != 1 {
		f.fail("want one container, got %d", len(pod.Containers))
		return f.errs
	}
	c := pod.Containers[0]
	if !slices.Equal(c.Args, []string{w.command}) {
		f.fail("args %v, want [%s]", c.Args, w.command)
	}
	checkContainerSecurity(f, c)
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			f.fail("%s must be an httpGet of %s", pr.name, pr.path)
			continue
		}
		g := pr.probe.HTTPGet
		if g.Path != pr.path {
			f.fail("%s path %q, want %q", pr.name, g.Path, pr.path)
		}
		if cp, ok := containerPort(c, g.Port); !ok || cp.Name != w.opsPort {
			f.fail("%s port %s is not the ops port %s", pr.name, g.Port.String(), w.opsPort)
		}
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			f.fail("env %s set twice", e.Name)
		}
		env[e.Name] = e
		if slices.Contains(secretEnv, e.Name) {
			ref := secretRef(e)
			switch {
			case ref == nil:
				f.fail("%s must come from a Secret", e.Name)
			case !s.secretHasKey(ref.Name, ref.Key, want, false):
				f.fail("%s reads key %q of Secret %q, which the chart does not render and which is no existingSecret", e.Name, ref.Key, ref.Name)
			}
		}
		if strings.HasSuffix(e.Name, "_ADDR") {
			port := intstr.Parse(e.Value[strings.LastIndex(e.Value, ":")+1:])
			if _, ok := containerPort(c, port); !ok {
				f.fail("%s=%q listens on a port the container does not declare", e.Name, e.Value)
			}
		}
	}
	required := []string{"ODIN_DATABASE_URL"}
	if want.redis {
		required = append(required, "ODIN_REDIS_URL", "ODIN_REDIS_MAC_SECRET")
	}
	for _, name := range required {
		if _, ok := env[name]; !ok {
			f.fail("%s is not set", name)
		}
	}
	checkVolumes(f, s, pod, c, want)
	return f.errs
}

func secretRef(e corev1.EnvVar) *corev1.SecretKeySelector {
	if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name == "" || e.ValueFrom.SecretKeyRef.Key == "" || e.Value != "" {
		return nil
	}
	return e.ValueFrom.SecretKeyRef
}

func checkContainerSecurity(f *failer, c corev1.Container) {
	sc := c.SecurityContext
	switch {
	case sc == nil:
		f.fail("container has no securityContext")
		return
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		f.fail("allowPrivilegeEscalation must be false")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		f.fail("readOnlyRootFilesystem must be true")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		f.fail("capabilities must drop ALL and add none")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		f.fail("resources.requests must set cpu and memory")
	}
	if c.Resources.Limits.Memory().IsZero() {
		f.fail("resources.limits must set memory")
	}
}

// checkVolumes checks that every mount has a volume, and every volume's
// Secret or ConfigMap is rendered or external.
func checkVolumes(f *failer, s chartSet, pod corev1.PodSpec, c corev1.Container, want expect) {
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			f.fail("volumeMount %s has no volume", m.Name)
			continue
		}
		if m.SubPath != "" {
			f.fail("volumeMount %s uses subPath: updates of its source would never reach the pod", m.Name)
		}
		switch {
		case v.Secret != nil:
			if !slices.Contains(want.externalSecrets, v.Secret.SecretName) && !slices.ContainsFunc(s.secrets, func(o object) bool { return o.meta.Name == v.Secret.SecretName && !o.hook }) {
				f.fail("volume %s: Secret %q is neither rendered nor external", v.Name, v.Secret.SecretName)
			}
		case v.ConfigMap != nil:
			if !slices.Contains(want.externalConfigMaps, v.ConfigMap.Name) && !slices.ContainsFunc(s.configMaps, func(o object) bool { return o.meta.Name == v.ConfigMap.Name }) {
				f.fail("volume %s: ConfigMap %q is neither rendered nor external", v.Name, v.ConfigMap.Name)
			}
		}
	}
	for _, e := range c.Env {
		if strings.HasSuffix(e.Name, "_FILE") && !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return strings.HasPrefix(e.Value, strings.TrimSuffix(m.MountPath, "/")+"/")
		}) {
			f.fail("%s=%s is on no mounted volume", e.Name, e.Value)
		}
	}
}

func (s chartSet) checkService(o object) []error {
	f := &failer{o: o}
	svc := o.obj.(*corev1.Service)
	d, ok := s.deploymentFor(svc.Spec.Selector)
	if !ok {
		f.fail("selector %v selects no Deployment", svc.Spec.Selector)
		return f.errs
	}
	for _, p := range svc.Spec.Ports {
		if _, ok := containerPort(d.Spec.Template.Spec.Containers[0], p.TargetPort); !ok {
			f.fail("port %s: targetPort %s is not a container port of %s", p.Name, p.TargetPort.String(), d.Name)
		}
		if p.AppProtocol == nil || *p.AppProtocol == "" {
			f.fail("port %s: set appProtocol so Istio knows the protocol", p.Name)
		}
	}
	return f.errs
}

// replicasOf returns the fewest replicas a Deployment runs: its HPA's
// minReplicas when one scales it.
func (s chartSet) replicasOf(d *appsv1.Deployment) int32 {
	for _, o := range s.hpas {
		h := o.obj.(*autoscalingv2.HorizontalPodAutoscaler)
		if h.Spec.ScaleTargetRef.Name == d.Name && h.Spec.MinReplicas != nil {
			return *h.Spec.MinReplicas
		}
	}
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func (s chartSet) checkPDB(o object) []error {
	f := &failer{o: o}
	p := o.obj.(*policyv1.PodDisruptionBudget)
	if p.Spec.Selector == nil {
		f.fail("no selector")
		return f.errs
	}
	d, ok := s.deploymentFor(p.Spec.Selector.MatchLabels)
	if !ok {
		f.fail("selector %v selects no Deployment", p.Spec.Selector.MatchLabels)
		return f.errs
	}
	if !maps.Equal(p.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
		f.fail("selector %v is not the selector of %s", p.Spec.Selector.MatchLabels, d.Name)
	}
	switch {
	case p.Spec.MaxUnavailable != nil && p.Spec.MinAvailable != nil:
		f.fail("sets both minAvailable and maxUnavailable")
	case p.Spec.MaxUnavailable != nil:
		if p.Spec.MaxUnavailable.Type != intstr.Int || p.Spec.MaxUnavailable.IntVal < 1 {
			f.fail("maxUnavailable %s must be a number of at least 1, or nodes can never drain", p.Spec.MaxUnavailable.String())
		}
	case p.Spec.MinAvailable != nil:
		if p.Spec.MinAvailable.Type != intstr.Int || p.Spec.MinAvailable.IntVal >= s.replicasOf(d) {
			f.fail("minAvailable %s must be a number below the %d replicas of %s, or nodes can never drain", p.Spec.MinAvailable.String(), s.replicasOf(d), d.Name)
		}
	default:
		f.fail("sets neither minAvailable nor maxUnavailable")
	}
	return f.errs
}

func (s chartSet) checkHPA(o object) []error {
	f := &failer{o: o}
	h := o.obj.(*autoscalingv2.HorizontalPodAutoscaler)
	ref := h.Spec.ScaleTargetRef
	var target *appsv1.Deployment
	for _, d := range s.deployments {
		if d.meta.Name == ref.Name {
			target = d.obj.(*appsv1.Deployment)
		}
	}
	switch {
	case ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || target == nil:
		f.fail("scaleTargetRef %s %s %s is not a rendered Deployment", ref.APIVersion, ref.Kind, ref.Name)
	case target.Spec.Replicas != nil:
		f.fail("%s sets replicas: every upgrade would reset what the HPA scaled to", target.Name)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
		f.fail("replicas must range from at least 2 up to maxReplicas")
	}
	if len(h.Spec.Metrics) == 0 {
		f.fail("no metrics")
	}
	return f.errs
}

// checkNetworkPolicy checks that a policy selects a Deployment, opens only
// ports its container declares, and leaves none of them closed to everyone.
func (s chartSet) checkNetworkPolicy(o object) []error {
	f := &failer{o: o}
	np := o.obj.(*networkingv1.NetworkPolicy)
	d, ok := s.deploymentFor(np.Spec.PodSelector.MatchLabels)
	if !ok {
		f.fail("podSelector %v selects no Deployment", np.Spec.PodSelector.MatchLabels)
		return f.errs
	}
	c := d.Spec.Template.Spec.Containers[0]
	open := map[int32]bool{}
	for _, rule := range np.Spec.Ingress {
		if len(rule.From) == 0 {
			f.fail("an ingress rule without from admits everyone")
		}
		for _, peer := range rule.From {
			if peer.NamespaceSelector == nil || peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == "" {
				f.fail("ingress peer %v does not name a namespace", peer)
			}
		}
		for _, p := range rule.Ports {
			if p.Port == nil {
				f.fail("an ingress rule without a port opens every port")
				continue
			}
			cp, ok := containerPort(c, *p.Port)
			if !ok {
				f.fail("port %s is not a container port of %s", p.Port.String(), d.Name)
				continue
			}
			open[cp.ContainerPort] = true
		}
	}
	for _, cp := range c.Ports {
		if !open[cp.ContainerPort] {
			f.fail("container port %s (%d) of %s is closed to every namespace", cp.Name, cp.ContainerPort, d.Name)
		}
	}
	return f.errs
}

// checkServiceMonitor checks that a ServiceMonitor scrapes /metrics on the
// ops port of an odin Service.
func (s chartSet) checkServiceMonitor(o object) []error {
	f := &failer{o: o}
	m := o.obj.(*monitoringv1.ServiceMonitor)
	var svc *corev1.Service
	for _, so := range s.services {
		cand := so.obj.(*corev1.Service)
		if selects(m.Spec.Selector.MatchLabels, cand.Labels) {
			if svc != nil {
				f.fail("selects more than one Service")
			}
			svc = cand
		}
	}
	if svc == nil {
		f.fail("selector %v selects no Service", m.Spec.Selector.MatchLabels)
		return f.errs
	}
	d, _ := s.deploymentFor(svc.Spec.Selector)
	w := workloads[d.Labels["app.kubernetes.io/component"]]
	if len(m.Spec.Endpoints) == 0 {
		f.fail("no endpoints")
	}
	for _, ep := range m.Spec.Endpoints {
		if ep.Path != "/metrics" {
			f.fail("endpoint path %q, want /metrics", ep.Path)
		}
		i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port })
		if i < 0 {
			f.fail("endpoint port %v is not a port of Service %s", ep.Port, svc.Name)
			continue
		}
		if cp, ok := containerPort(d.Spec.Template.Spec.Containers[0], svc.Spec.Ports[i].TargetPort); !ok || cp.Name != w.opsPort {
			f.fail("endpoint port %v does not reach the ops port %s", ep.Port, w.opsPort)
		}
	}
	return f.errs
}

func checkAuthorizationPolicy(o object, s chartSet, want expect) []error {
	f := &failer{o: o}
	ap := o.obj.(*authorizationPolicy).spec
	if ap.GetAction() != securityv1beta1.AuthorizationPolicy_CUSTOM {
		f.fail("action %v, want CUSTOM", ap.GetAction())
	}
	if got := ap.GetProvider().GetName(); got != want.provider {
		f.fail("provider %q, want the configured extension provider %q", got, want.provider)
	}
	if len(ap.GetRules()) == 0 {
		f.fail("a CUSTOM policy without rules matches no request")
	}
	sel := ap.GetSelector().GetMatchLabels()
	if len(sel) == 0 {
		f.fail("no selector: the policy covers its whole namespace (istio-system: the mesh), odin-authz included")
	}
	if d, ok := s.deploymentFor(sel); ok {
		f.fail("selector %v selects %s itself", sel, d.Name)
	}
	return f.errs
}
