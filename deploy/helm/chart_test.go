// Package helm_test renders the Helm chart in odin/ with Helm's Go SDK, as
// `helm template` would, and checks what it renders: every object decoded
// strictly into its Kubernetes (or Istio, or Prometheus Operator) API type,
// and the objects checked against each other and the values. No cluster.
package helm_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/action"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/odin-scan/odin-authz/extauthz/policy"
)

const valuesFile = "odin/values.yaml"

// chartCase is one set of values the chart is rendered with.
type chartCase struct {
	name   string
	files  []string       // values files, after values.yaml
	set    map[string]any // then these, as --set would (nested maps)
	want   expect
	kinds  []string // "Kind name" of every object rendered, hooks included
	secret []string // keys of the Secret the chart renders, if any
}

// allValueSecrets sets every secret as a value, with no existingSecret.
var allValueSecrets = map[string]any{"secrets": map[string]any{
	"existingSecret":            "",
	"databaseUrl":               map[string]any{"value": "postgres://odin:pw@db:5432/odin"},
	"redisUrl":                  map[string]any{"value": "redis://redis:6379/0"},
	"redisMacSecret":            map[string]any{"value": strings.Repeat("m", 48)},
	"redisMacSecretPrevious":    map[string]any{"value": strings.Repeat("p", 48)},
	"adminToken":                map[string]any{"value": strings.Repeat("t", 40)},
	"webhookSecret":             map[string]any{"value": "whsec_c2VjcmV0"},
	"outgoingWebhookSecret":     map[string]any{"value": "whsec_b3V0Z29pbmctd2ViaG9vay1zZWNyZXQtMDEy"},
	"githubSecretScanningToken": map[string]any{"value": "github_pat_0123456789"},
}}

var chartCases = []chartCase{
	{
		name: "defaults",
		want: expect{externalSecrets: []string{"odin-secrets"}, provider: "odin-authz", redis: true},
		kinds: []string{
			"Deployment odin-admin", "Deployment odin-authz", "Job odin-migrate",
			"PodDisruptionBudget odin-admin", "PodDisruptionBudget odin-authz",
			"Service odin-admin", "Service odin-authz",
			"ServiceAccount odin-admin", "ServiceAccount odin-authz",
		},
	},
	{
		name:  "production",
		files: []string{productionFile},
		want:  expect{externalSecrets: []string{"odin-secrets", "odin-postgres-app"}, provider: "odin-authz", redis: true},
		kinds: []string{
			"AuthorizationPolicy odin-ext-authz", "ConfigMap odin-policy",
			"Deployment odin-admin", "Deployment odin-authz",
			"HorizontalPodAutoscaler odin-authz", "Job odin-migrate",
			"NetworkPolicy odin-admin", "NetworkPolicy odin-authz",
			"PodDisruptionBudget odin-admin", "PodDisruptionBudget odin-authz",
			"Service odin-admin", "Service odin-authz",
			"ServiceAccount odin-admin", "ServiceAccount odin-authz",
			"ServiceMonitor odin-admin", "ServiceMonitor odin-authz",
		},
	},
	{
		name: "secrets as values, outgoing webhooks and GitHub secret scanning on",
		set: mergeValues(allValueSecrets, map[string]any{"admin": map[string]any{
			"outgoingWebhooks":     map[string]any{"url": "https://dashboard.example.com/hooks/odin"},
			"githubSecretScanning": map[string]any{"enabled": true},
		}}),
		want: expect{provider: "odin-authz", redis: true},
		kinds: []string{
			"Deployment odin-admin", "Deployment odin-authz", "Job odin-migrate",
			"PodDisruptionBudget odin-admin", "PodDisruptionBudget odin-authz",
			"Secret odin-credentials", "Secret odin-migrate",
			"Service odin-admin", "Service odin-authz",
			"ServiceAccount odin-admin", "ServiceAccount odin-authz",
		},
		secret: []string{"admin-token", "database-url", "github-secret-scanning-token", "outgoing-webhook-secret", "redis-mac-secret", "redis-mac-secret-previous", "redis-url", "webhook-secret"},
	},
	{
		name: "TLS outside a mesh, no Redis, own policy ConfigMap, another release name",
		set: map[string]any{
			"fullnameOverride": "edge",
			"tls":              map[string]any{"enabled": true, "existingSecret": "odin-tls", "clientAuth": true},
			"redis":            map[string]any{"enabled": false},
			"policy":           map[string]any{"existingConfigMap": "my-policy"},
			"networkPolicy":    map[string]any{"enabled": true, "authz": map[string]any{"fromNamespaces": []any{"envoy"}}},
			"admin":            map[string]any{"pdb": map[string]any{"maxUnavailable": "", "minAvailable": 1}},
		},
		want: expect{externalSecrets: []string{"odin-secrets", "odin-tls"}, externalConfigMaps: []string{"my-policy"}, provider: "odin-authz"},
		kinds: []string{
			"Deployment edge-admin", "Deployment edge-authz", "Job edge-migrate",
			"NetworkPolicy edge-admin", "NetworkPolicy edge-authz",
			"PodDisruptionBudget edge-admin", "PodDisruptionBudget edge-authz",
			"Service edge-admin", "Service edge-authz",
			"ServiceAccount edge-admin", "ServiceAccount edge-authz",
		},
	},
}

// render renders a case and decodes every object strictly.
func (tc chartCase) render(t *testing.T) (chartSet, rendering) {
	t.Helper()
	r, err := renderChart(t, tc.values(t))
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	var objs []object
	for _, d := range r.docs {
		o, err := decode(d)
		if err != nil {
			t.Errorf("decode: %v", err)
			continue
		}
		objs = append(objs, o)
	}
	return newChartSet(objs), r
}

func (tc chartCase) values(t *testing.T) map[string]any {
	vals := readValues(t, append([]string{valuesFile}, tc.files...)...)
	return mergeValues(vals, tc.set)
}

// mergeValues overlays b on a, recursively, as --set does.
func mergeValues(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeValues(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

func TestChartRenders(t *testing.T) {
	for _, tc := range chartCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			set, r := tc.render(t)
			var kinds []string
			for _, o := range set.all {
				kinds = append(kinds, o.kind+" "+o.meta.Name)
			}
			slices.Sort(kinds)
			if diff := cmp.Diff(tc.kinds, kinds); diff != "" {
				t.Errorf("rendered objects (-want, +got):\n%s", diff)
			}
			if err := checkChart(set, tc.want); err != nil {
				t.Errorf("rendering is invalid:\n%v", err)
			}
			var keys []string
			for _, o := range set.secrets {
				if !o.hook {
					for k := range o.obj.(*corev1.Secret).Data {
						keys = append(keys, k)
					}
				}
			}
			slices.Sort(keys)
			if diff := cmp.Diff(tc.secret, keys); diff != "" {
				t.Errorf("keys of the chart's Secret (-want, +got):\n%s", diff)
			}
			if !strings.Contains(r.notes, "svc.cluster.local") {
				t.Errorf("NOTES.txt does not say where the service is:\n%s", r.notes)
			}
		})
	}
}

// With every secret in an existingSecret, no secret value appears anywhere
// in the rendering, and no Secret object is rendered.
func TestNoPlaintextSecretsWithExistingSecret(t *testing.T) {
	tc := chartCase{files: []string{productionFile}}
	set, r := tc.render(t)
	if len(set.secrets) != 0 {
		t.Errorf("rendered %d Secrets, want none", len(set.secrets))
	}
	for _, o := range set.all {
		for _, c := range podContainers(o) {
			for _, e := range c.Env {
				if slices.Contains(secretEnv, e.Name) && (e.Value != "" || secretRef(e) == nil) {
					t.Errorf("%s: %s is not read from a Secret", o, e.Name)
				}
			}
		}
	}
	// The values that would be secrets, had they been set, never are.
	for _, d := range r.docs {
		if strings.Contains(d.yaml, "postgres://") || strings.Contains(d.yaml, "redis://") {
			t.Errorf("%s contains a store URL", d.source)
		}
	}
}

// podContainers returns the containers of a Deployment's or Job's pods.
func podContainers(o object) []corev1.Container {
	switch v := o.obj.(type) {
	case *appsv1.Deployment:
		return v.Spec.Template.Spec.Containers
	case *batchv1.Job:
		return v.Spec.Template.Spec.Containers
	}
	return nil
}

// The production values' policy is one odin authz accepts.
func TestProductionPolicyParses(t *testing.T) {
	set, _ := chartCase{files: []string{productionFile}}.render(t)
	if len(set.configMaps) != 1 {
		t.Fatalf("want the policy ConfigMap, got %d ConfigMaps", len(set.configMaps))
	}
	cm := set.configMaps[0].obj.(*corev1.ConfigMap)
	if _, err := policy.Parse([]byte(cm.Data["policy.yaml"]), "policy.yaml"); err != nil {
		t.Errorf("odin authz would refuse the policy: %v", err)
	}
	d := findDeployment(t, set, "odin-authz")
	if !slices.ContainsFunc(d.Spec.Template.Spec.Containers[0].Env, func(e corev1.EnvVar) bool {
		return e.Name == "ODIN_POLICY_FILE" && e.Value == "/etc/odin/policy/policy.yaml"
	}) {
		t.Errorf("ODIN_POLICY_FILE does not point at the mounted policy")
	}
}

func findDeployment(t *testing.T, set chartSet, name string) *appsv1.Deployment {
	t.Helper()
	for _, o := range set.deployments {
		if o.meta.Name == name {
			return o.obj.(*appsv1.Deployment)
		}
	}
	t.Fatalf("no Deployment %s", name)
	return nil
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// With tls.enabled, both servers get the certificate files, and the admin
// probes (on the TLS port) use HTTPS; authz probes stay on the plain ops port.
func TestChartTLS(t *testing.T) {
	set, _ := chartCases[3].render(t)
	authz := findDeployment(t, set, "edge-authz").Spec.Template.Spec.Containers[0]
	admin := findDeployment(t, set, "edge-admin").Spec.Template.Spec.Containers[0]
	for _, c := range []struct {
		c      corev1.Container
		prefix string
	}{{authz, "ODIN_TLS_"}, {admin, "ODIN_ADMIN_TLS_"}} {
		got := map[string]string{}
		for _, suffix := range []string{"CERT_FILE", "KEY_FILE", "CLIENT_CA_FILE"} {
			got[suffix] = envValue(c.c, c.prefix+suffix)
		}
		want := map[string]string{"CERT_FILE": "/etc/odin/tls/tls.crt", "KEY_FILE": "/etc/odin/tls/tls.key", "CLIENT_CA_FILE": "/etc/odin/tls/ca.crt"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s TLS env (-want, +got):\n%s", c.c.Name, diff)
		}
	}
	if s := admin.ReadinessProbe.HTTPGet.Scheme; s != corev1.URISchemeHTTPS {
		t.Errorf("admin readiness scheme %q, want HTTPS", s)
	}
	if s := authz.ReadinessProbe.HTTPGet.Scheme; s == corev1.URISchemeHTTPS {
		t.Errorf("authz readiness over HTTPS, but its ops port is plain")
	}
	if v := envValue(authz, "ODIN_REDIS_URL"); v != "" || slices.ContainsFunc(authz.Env, func(e corev1.EnvVar) bool { return strings.HasPrefix(e.Name, "ODIN_REDIS") }) {
		t.Errorf("redis.enabled=false still sets Redis variables")
	}
}

// Values that cannot work are refused at render time, naming the problem.
func TestChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		name    string
		set     map[string]any
		wantErr string
	}{
		{"value beside existingSecret", map[string]any{"secrets": map[string]any{"databaseUrl": map[string]any{"value": "postgres://x"}}}, "secrets.databaseUrl.value is set, but so is an existingSecret"},
		{"no database URL", map[string]any{"secrets": map[string]any{"existingSecret": ""}}, "secrets.databaseUrl is required"},
		{"Redis without MAC secret", mergeValues(allValueSecrets, map[string]any{"secrets": map[string]any{"redisMacSecret": map[string]any{"value": ""}}}), "secrets.redisMacSecret is required"},
		{"outgoing webhooks without their secret", mergeValues(allValueSecrets, map[string]any{
			"secrets": map[string]any{"outgoingWebhookSecret": map[string]any{"value": ""}},
			"admin":   map[string]any{"outgoingWebhooks": map[string]any{"url": "https://dashboard.example.com/hooks/odin"}},
		}), "secrets.outgoingWebhookSecret is required"},
		{"schema: outgoing webhook URL that is not http(s)", map[string]any{"admin": map[string]any{"outgoingWebhooks": map[string]any{"url": "dashboard.example.com"}}}, "url"},
		{"TLS without certificate", map[string]any{"tls": map[string]any{"enabled": true}}, "tls.existingSecret is required"},
		{"mesh-wide CUSTOM policy", map[string]any{"istio": map[string]any{"authorizationPolicy": map[string]any{"enabled": true, "selector": nil}}}, "must select the workloads"},
		{"CUSTOM policy without rules", map[string]any{"istio": map[string]any{"authorizationPolicy": map[string]any{"enabled": true, "rules": []any{}}}}, "matches no request"},
		{"PDB with both budgets", map[string]any{"authz": map[string]any{"pdb": map[string]any{"minAvailable": 1}}}, "not both"},
		{"schema: unknown top-level key", map[string]any{"replicaCount": 3}, "replicaCount"},
		{"schema: replicas not a number", map[string]any{"authz": map[string]any{"replicas": "three"}}, "replicas"},
		{"schema: env that is not ODIN_*", map[string]any{"authz": map[string]any{"env": map[string]any{"DATABASE_URL": "x"}}}, "DATABASE_URL"},
		{"schema: unknown log level", map[string]any{"config": map[string]any{"logLevel": "verbose"}}, "logLevel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := renderChart(t, chartCase{set: tc.set}.values(t))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("render error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

// The chart passes `helm lint --strict` with both values files.
func TestChartLint(t *testing.T) {
	for _, files := range [][]string{{valuesFile}, {valuesFile, productionFile}} {
		lint := action.NewLint()
		lint.Strict = true
		lint.Namespace = releaseNS
		lint.KubeVersion = kubeVersion(t)
		res := lint.Run([]string{chartDir}, readValues(t, files...))
		for _, m := range res.Messages {
			t.Logf("lint %v: %s", files, m.Error())
		}
		if len(res.Errors) > 0 {
			t.Errorf("lint %v: %v", files, res.Errors)
		}
	}
}

// The chart's image follows its appVersion unless image.tag says otherwise.
func TestChartImage(t *testing.T) {
	ch := loadChart(t)
	for _, tc := range []struct {
		set  map[string]any
		want string
	}{
		{nil, "ghcr.io/odin-scan/odin-authz:" + ch.Metadata.AppVersion},
		{map[string]any{"image": map[string]any{"tag": "v9.9.9"}}, "ghcr.io/odin-scan/odin-authz:v9.9.9"},
		{map[string]any{"image": map[string]any{"digest": "sha256:" + strings.Repeat("ab", 32)}}, "ghcr.io/odin-scan/odin-authz@sha256:" + strings.Repeat("ab", 32)},
	} {
		set, _ := chartCase{set: tc.set}.render(t)
		for _, o := range set.all {
			for _, c := range podContainers(o) {
				if c.Image != tc.want {
					t.Errorf("%v: %s runs %s, want %s", tc.set, o, c.Image, tc.want)
				}
			}
		}
	}
}

var (
	readmeRow = regexp.MustCompile(`(?m)^\| ([^|]+) \|`)
	readmeKey = regexp.MustCompile("`([a-zA-Z][a-zA-Z0-9.]*)`")
)

// Every value of values.yaml is described in the values table of README.md:
// itself or a parent (a row `authz.pdb` describes authz.pdb.maxUnavailable).
func TestReadmeDescribesEveryValue(t *testing.T) {
	readme, err := os.ReadFile("odin/README.md")
	if err != nil {
		t.Fatal(err)
	}
	described := map[string]bool{}
	for _, row := range readmeRow.FindAllStringSubmatch(string(readme), -1) {
		for _, m := range readmeKey.FindAllStringSubmatch(row[1], -1) {
			described[m[1]] = true
		}
	}
	var missing []string
	var walk func(prefix string, v map[string]any)
	walk = func(prefix string, v map[string]any) {
		for k, child := range v {
			p := strings.TrimPrefix(prefix+"."+k, ".")
			if described[p] {
				continue
			}
			if m, ok := child.(map[string]any); ok && len(m) > 0 {
				walk(p, m)
				continue
			}
			missing = append(missing, p)
		}
	}
	walk("", readValues(t, valuesFile))
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("values not described in the table of odin/README.md: %v", missing)
	}
}

// The lifecycle settings of odin admin: each is off by default and sets its
// variables, with its secret read from the chart-wide Secret, when on.
func TestChartAdminLifecycleSettings(t *testing.T) {
	env := func(c corev1.Container) map[string]corev1.EnvVar {
		m := map[string]corev1.EnvVar{}
		for _, e := range c.Env {
			m[e.Name] = e
		}
		return m
	}
	lifecycle := []string{"ODIN_OUTGOING_WEBHOOK_URL", "ODIN_OUTGOING_WEBHOOK_SECRET", "ODIN_GITHUB_SECRET_SCANNING", "ODIN_GITHUB_SECRET_SCANNING_TOKEN"}

	set, _ := chartCases[0].render(t)
	// The console's sessions live in one admin pod: its Service keeps a
	// client on one pod by default.
	for _, o := range set.services {
		if svc := o.obj.(*corev1.Service); svc.Name == "odin-admin" && svc.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
			t.Errorf("admin Service sessionAffinity %q, want ClientIP", svc.Spec.SessionAffinity)
		}
	}
	off := env(findDeployment(t, set, "odin-admin").Spec.Template.Spec.Containers[0])
	for _, name := range lifecycle {
		if _, ok := off[name]; ok {
			t.Errorf("defaults set %s", name)
		}
	}

	on := chartCase{name: "lifecycle on", set: map[string]any{"admin": map[string]any{
		"outgoingWebhooks":     map[string]any{"url": "https://dashboard.example.com/hooks/odin"},
		"githubSecretScanning": map[string]any{"enabled": true},
	}}}
	set, _ = on.render(t)
	got := env(findDeployment(t, set, "odin-admin").Spec.Template.Spec.Containers[0])
	if v := got["ODIN_OUTGOING_WEBHOOK_URL"].Value; v != "https://dashboard.example.com/hooks/odin" {
		t.Errorf("ODIN_OUTGOING_WEBHOOK_URL = %q", v)
	}
	if v := got["ODIN_GITHUB_SECRET_SCANNING"].Value; v != "true" {
		t.Errorf("ODIN_GITHUB_SECRET_SCANNING = %q", v)
	}
	for name, want := range map[string]struct {
		key      string
		optional bool
	}{
		// Required: odin admin refuses a webhook URL without its secret.
		"ODIN_OUTGOING_WEBHOOK_SECRET":      {"outgoing-webhook-secret", false},
		"ODIN_GITHUB_SECRET_SCANNING_TOKEN": {"github-secret-scanning-token", true},
	} {
		ref := secretRef(got[name])
		if ref == nil {
			t.Errorf("%s does not come from a Secret", name)
			continue
		}
		optional := ref.Optional != nil && *ref.Optional
		if ref.Name != "odin-secrets" || ref.Key != want.key || optional != want.optional {
			t.Errorf("%s from %s/%s (optional %v), want odin-secrets/%s (optional %v)", name, ref.Name, ref.Key, optional, want.key, want.optional)
		}
	}
	authz := env(findDeployment(t, set, "odin-authz").Spec.Template.Spec.Containers[0])
	for _, name := range lifecycle {
		if _, ok := authz[name]; ok {
			t.Errorf("odin authz gets %s, an admin setting", name)
		}
	}
}

// authz.trustedProxies becomes ODIN_TRUSTED_PROXIES of odin authz alone,
// comma-separated; by default it is not set. A value that is not a CIDR nor
// an address is refused by the schema.
func TestChartTrustedProxies(t *testing.T) {
	env := func(set chartSet, name string) (string, bool) {
		for _, e := range findDeployment(t, set, name).Spec.Template.Spec.Containers[0].Env {
			if e.Name == "ODIN_TRUSTED_PROXIES" {
				return e.Value, true
			}
		}
		return "", false
	}
	set, _ := chartCases[0].render(t)
	if v, ok := env(set, "odin-authz"); ok {
		t.Errorf("defaults set ODIN_TRUSTED_PROXIES=%q", v)
	}
	set, _ = chartCase{name: "trusted proxies", set: map[string]any{"authz": map[string]any{
		"trustedProxies": []any{"10.0.0.0/8", "2001:db8::/32", "192.0.2.10"},
	}}}.render(t)
	if v, _ := env(set, "odin-authz"); v != "10.0.0.0/8,2001:db8::/32,192.0.2.10" {
		t.Errorf("ODIN_TRUSTED_PROXIES = %q, want 10.0.0.0/8,2001:db8::/32,192.0.2.10", v)
	}
	if v, ok := env(set, "odin-admin"); ok {
		t.Errorf("odin admin gets ODIN_TRUSTED_PROXIES=%q, an authz setting", v)
	}
	for _, bad := range []any{"load-balancer.internal", []any{"10.0.0.0/8"}} {
		_, err := renderChart(t, chartCase{set: map[string]any{"authz": map[string]any{"trustedProxies": []any{bad}}}}.values(t))
		if err == nil || !strings.Contains(err.Error(), "trustedProxies") {
			t.Errorf("trustedProxies [%v]: render error %v, want one naming trustedProxies", bad, err)
		}
	}
}
