package helm_test

import (
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// brokenChart is a rendering broken on purpose after decoding, and the
// problem checkChart must report for it: the checks can fail.
type brokenChart struct {
	name    string
	base    int // index into chartCases
	kind    string
	object  string
	break_  func(o *object)
	wantErr string
}

func job(o *object) *batchv1.Job                   { return o.obj.(*batchv1.Job) }
func deployment(o *object) *appsv1.Deployment      { return o.obj.(*appsv1.Deployment) }
func netpol(o *object) *networkingv1.NetworkPolicy { return o.obj.(*networkingv1.NetworkPolicy) }

var brokenCharts = []brokenChart{
	{"migration after install", 0, "Job", "odin-migrate", func(o *object) { job(o).Annotations["helm.sh/hook"] = "post-install" }, "want pre-install,pre-upgrade"},
	{"migration Job kept forever", 0, "Job", "odin-migrate", func(o *object) { job(o).Annotations["helm.sh/hook-delete-policy"] = "hook-succeeded" }, "before-hook-creation"},
	{"migration runs authz", 0, "Job", "odin-migrate", func(o *object) { job(o).Spec.Template.Spec.Containers[0].Args = []string{"authz"} }, "want [migrate]"},
	{"migration reads the chart's regular Secret", 2, "Job", "odin-migrate", func(o *object) {
		job(o).Spec.Template.Spec.Containers[0].Env[2].ValueFrom.SecretKeyRef.Name = "odin-credentials"
	}, "does not exist yet when pre-install hooks run"},
	{"migration on another database", 1, "Job", "odin-migrate", func(o *object) {
		job(o).Spec.Template.Spec.Containers[0].Env[2].ValueFrom.SecretKeyRef.Name = "odin-secrets"
	}, "migrates another database than odin-authz"},
	{"migration in the mesh", 0, "Job", "odin-migrate", func(o *object) { job(o).Spec.Template.Labels["sidecar.istio.io/inject"] = "true" }, "sidecar"},
	{"env reads a Secret nobody renders", 2, "Secret", "odin-credentials", func(o *object) { o.meta.Name = "other" }, `which the chart does not render`},
	{"readiness on the gRPC port", 0, "Deployment", "odin-authz", func(o *object) {
		deployment(o).Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet.Port = intstr.FromString("grpc")
	}, "readinessProbe port grpc is not the ops port http-ops"},
	{"liveness on /readyz", 0, "Deployment", "odin-admin", func(o *object) {
		deployment(o).Spec.Template.Spec.Containers[0].LivenessProbe.HTTPGet.Path = "/readyz"
	}, `livenessProbe path "/readyz"`},
	{"writable root filesystem", 0, "Deployment", "odin-authz", func(o *object) {
		f := false
		deployment(o).Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = &f
	}, "readOnlyRootFilesystem"},
	{"no checksum annotation", 0, "Deployment", "odin-admin", func(o *object) { delete(deployment(o).Spec.Template.Annotations, "checksum/secret") }, "checksum/secret"},
	{"replicas beside an HPA", 1, "Deployment", "odin-authz", func(o *object) { n := int32(3); deployment(o).Spec.Replicas = &n }, "every upgrade would reset"},
	{"PDB selects nothing", 0, "PodDisruptionBudget", "odin-authz", func(o *object) {
		o.obj.(*policyv1.PodDisruptionBudget).Spec.Selector.MatchLabels["app.kubernetes.io/component"] = "api"
	}, "selects no Deployment"},
	{"PDB blocks drains", 1, "PodDisruptionBudget", "odin-authz", func(o *object) {
		p := o.obj.(*policyv1.PodDisruptionBudget)
		n := intstr.FromInt32(3)
		p.Spec.MaxUnavailable, p.Spec.MinAvailable = nil, &n
	}, "minAvailable 3 must be a number below the 3 replicas"},
	{"NetworkPolicy on an undeclared port", 1, "NetworkPolicy", "odin-authz", func(o *object) {
		p := intstr.FromInt32(9999)
		netpol(o).Spec.Ingress[0].Ports[0].Port = &p
	}, "port 9999 is not a container port"},
	{"NetworkPolicy closes the ops port", 1, "NetworkPolicy", "odin-authz", func(o *object) {
		netpol(o).Spec.Ingress = netpol(o).Spec.Ingress[:1]
	}, "http-ops (9003) of odin-authz is closed"},
	{"ServiceMonitor on the gRPC port", 1, "ServiceMonitor", "odin-authz", func(o *object) {
		o.obj.(*monitoringv1.ServiceMonitor).Spec.Endpoints[0].Port = "grpc"
	}, "does not reach the ops port"},
	{"policy names another provider", 1, "AuthorizationPolicy", "odin-ext-authz", func(o *object) {
		o.obj.(*authorizationPolicy).spec.GetProvider().Name = "odin"
	}, `want the configured extension provider "odin-authz"`},
	{"policy covers odin-authz", 1, "AuthorizationPolicy", "odin-ext-authz", func(o *object) {
		o.obj.(*authorizationPolicy).spec.Selector.MatchLabels = map[string]string{"app.kubernetes.io/component": "authz"}
	}, "selects odin-authz itself"},
}

func TestBrokenChartsFail(t *testing.T) {
	for _, tc := range brokenCharts {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			set, _ := chartCases[tc.base].render(t)
			found := false
			for i := range set.all {
				o := &set.all[i]
				if o.kind == tc.kind && o.meta.Name == tc.object {
					tc.break_(o)
					found = true
				}
			}
			if !found {
				t.Fatalf("no %s %s", tc.kind, tc.object)
			}
			err := checkChart(newChartSet(set.all), chartCases[tc.base].want)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("checks reported %v, want an error mentioning %q", err, tc.wantErr)
			}
		})
	}
}
