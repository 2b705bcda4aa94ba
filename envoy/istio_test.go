package envoy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIstioManifestsValid(t *testing.T) {
	if err := checkManifests(loadManifests(t)); err != nil {
		t.Errorf("Istio manifests are invalid:\n%v", err)
	}
}

func TestIstioManifestShape(t *testing.T) {
	want := []string{
		"AuthorizationPolicy istio-system/odin-ext-authz (istio/authorizationpolicy.yaml)",
		"Deployment odin/odin-admin (istio/odin-admin.yaml)",
		"Deployment odin/odin-authz (istio/odin-authz.yaml)",
		"IstioOperator istio-system/odin (istio/meshconfig.yaml)",
		"Job odin/odin-migrate (istio/odin-migrate.yaml)",
		"Namespace /odin (istio/namespace.yaml)",
		"PodDisruptionBudget odin/odin-authz (istio/odin-authz.yaml)",
		"Service odin/odin-admin (istio/odin-admin.yaml)",
		"Service odin/odin-authz (istio/odin-authz.yaml)",
		"ServiceAccount odin/odin-admin (istio/odin-admin.yaml)",
		"ServiceAccount odin/odin-authz (istio/odin-authz.yaml)",
	}
	var got []string
	for _, m := range loadManifests(t) {
		meta, _ := m.doc["metadata"].(map[string]any)
		got = append(got, fmt.Sprintf("%s %s/%s (%s)", m.doc["kind"], str(meta["namespace"]), meta["name"], m.file))
	}
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Istio objects (-want, +got):\n%s", diff)
	}
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// brokenIstio is a deliberately broken copy of the shipped manifests and the
// problem validation must report for it.
type brokenIstio struct {
	name    string
	kind    string // the object to edit, by kind and name
	object  string
	path    string // dotted path into the object; numbers index lists
	value   any    // the new value; nil deletes the field
	wantErr string // must appear in the error (case, '_' ignored)
}

var brokenIstioCases = []brokenIstio{
	// AuthorizationPolicy
	{name: "CUSTOM without provider", kind: "AuthorizationPolicy", object: "odin-ext-authz", path: "spec.provider", wantErr: "action CUSTOM needs provider.name"},
	{name: "CUSTOM without rules", kind: "AuthorizationPolicy", object: "odin-ext-authz", path: "spec.rules", wantErr: "no rules"},
	{name: "CUSTOM with empty rules", kind: "AuthorizationPolicy", object: "odin-ext-authz", path: "spec.rules", value: []any{}, wantErr: "no rules"},
	{name: "provider name mismatch", kind: "AuthorizationPolicy", object: "odin-ext-authz", path: "spec.provider.name", value: "odin", wantErr: `provider "odin" is not an ext_authz extension provider`},
	{name: "mesh-wide CUSTOM policy", kind: "AuthorizationPolicy", object: "odin-ext-authz", path: "spec.selector", wantErr: "the whole mesh"},
	{name: "policy on the authz server itself", kind: "AuthorizationPolicy", object: "odin-ext-authz", path: "spec.selector.matchLabels", value: map[string]any{"app.kubernetes.io/name": "odin-authz"}, wantErr: "selects the authz server"},
	{name: "unknown policy field", kind: "AuthorizationPolicy", object: "odin-ext-authz", path: "spec.actoin", value: "CUSTOM", wantErr: "unknown field"},
	{name: "unknown action", kind: "AuthorizationPolicy", object: "odin-ext-authz", path: "spec.action", value: "CUSTOMER", wantErr: "enum"},
	{name: "no CUSTOM policy", kind: "AuthorizationPolicy", object: "odin-ext-authz", path: "spec.action", value: "ALLOW", wantErr: "no AuthorizationPolicy with action CUSTOM"},
	// MeshConfig
	{name: "provider timeout unset", kind: "IstioOperator", object: "odin", path: "spec.meshConfig.extensionProviders.0.envoyExtAuthzGrpc.timeout", wantErr: "timeout 0s is unset"},
	{name: "provider timeout 600s", kind: "IstioOperator", object: "odin", path: "spec.meshConfig.extensionProviders.0.envoyExtAuthzGrpc.timeout", value: "600s", wantErr: "timeout 10m0s"},
	{name: "provider fails open", kind: "IstioOperator", object: "odin", path: "spec.meshConfig.extensionProviders.0.envoyExtAuthzGrpc.failOpen", value: true, wantErr: "failOpen must be false"},
	{name: "provider outage is 403", kind: "IstioOperator", object: "odin", path: "spec.meshConfig.extensionProviders.0.envoyExtAuthzGrpc.statusOnError", value: "403", wantErr: "statusOnError"},
	{name: "provider on the HTTP port", kind: "IstioOperator", object: "odin", path: "spec.meshConfig.extensionProviders.0.envoyExtAuthzGrpc.port", value: 9002, wantErr: `the provider needs "grpc"`},
	{name: "provider on a missing port", kind: "IstioOperator", object: "odin", path: "spec.meshConfig.extensionProviders.0.envoyExtAuthzGrpc.port", value: 9999, wantErr: "port 9999 is not a port"},
	{name: "provider in the wrong namespace", kind: "IstioOperator", object: "odin", path: "spec.meshConfig.extensionProviders.0.envoyExtAuthzGrpc.service", value: "odin-authz.default.svc.cluster.local", wantErr: "no Service odin-authz in namespace default"},
	{name: "provider short service name", kind: "IstioOperator", object: "odin", path: "spec.meshConfig.extensionProviders.0.envoyExtAuthzGrpc.service", value: "odin-authz", wantErr: "svc.cluster.local"},
	{name: "unknown meshConfig field", kind: "IstioOperator", object: "odin", path: "spec.meshConfig.extensionProviders.0.envoyExtAuthzGrpc.failClosed", value: true, wantErr: "unknown field"},
	// Deployments
	{name: "authz single replica", kind: "Deployment", object: "odin-authz", path: "spec.replicas", value: 1, wantErr: "replicas must be at least 2"},
	{name: "readiness on /healthz", kind: "Deployment", object: "odin-authz", path: "spec.template.spec.containers.0.readinessProbe.httpGet.path", value: "/healthz", wantErr: `readinessProbe path is "/healthz"`},
	{name: "liveness on the gRPC port", kind: "Deployment", object: "odin-authz", path: "spec.template.spec.containers.0.livenessProbe.httpGet.port", value: "grpc", wantErr: "livenessProbe port grpc resolves to 9001, want the ops port 9003"},
	{name: "readiness on an undeclared port", kind: "Deployment", object: "odin-authz", path: "spec.template.spec.containers.0.readinessProbe.httpGet.port", value: 8080, wantErr: "readinessProbe port 8080 is not a port the container declares"},
	{name: "no liveness probe", kind: "Deployment", object: "odin-admin", path: "spec.template.spec.containers.0.livenessProbe", wantErr: "livenessProbe must be an httpGet"},
	{name: "admin probes on the authz ops port", kind: "Deployment", object: "odin-admin", path: "spec.template.spec.containers.0.readinessProbe.httpGet.port", value: 9003, wantErr: "readinessProbe port 9003 is not a port the container declares"},
	{name: "runs as root", kind: "Deployment", object: "odin-authz", path: "spec.template.spec.containers.0.securityContext.runAsNonRoot", value: false, wantErr: "runAsNonRoot must be true"},
	{name: "privilege escalation", kind: "Deployment", object: "odin-authz", path: "spec.template.spec.containers.0.securityContext.allowPrivilegeEscalation", value: true, wantErr: "allowPrivilegeEscalation"},
	{name: "no resource requests", kind: "Deployment", object: "odin-authz", path: "spec.template.spec.containers.0.resources.requests", wantErr: "resources.requests"},
	{name: "database URL in plain text", kind: "Deployment", object: "odin-authz", path: "spec.template.spec.containers.0.env.3", value: map[string]any{"name": "ODIN_DATABASE_URL", "value": "postgres://odin:secret@db/odin"}, wantErr: "ODIN_DATABASE_URL must come from a Secret"},
	{name: "redis MAC secret missing", kind: "Deployment", object: "odin-authz", path: "spec.template.spec.containers.0.env.5", value: map[string]any{"name": "ODIN_UNUSED", "value": "x"}, wantErr: "ODIN_REDIS_MAC_SECRET is not set"},
	{name: "redis MAC secret in plain text", kind: "Deployment", object: "odin-admin", path: "spec.template.spec.containers.0.env.3", value: map[string]any{"name": "ODIN_REDIS_MAC_SECRET", "value": "0123456789abcdef0123456789abcdef"}, wantErr: "ODIN_REDIS_MAC_SECRET must come from a Secret"},
	{name: "redis URL missing", kind: "Deployment", object: "odin-admin", path: "spec.template.spec.containers.0.env.2", value: map[string]any{"name": "ODIN_UNUSED", "value": "x"}, wantErr: "ODIN_REDIS_URL is not set"},
	{name: "listen address on an undeclared port", kind: "Deployment", object: "odin-authz", path: "spec.template.spec.containers.0.env.0.value", value: ":9999", wantErr: "ODIN_GRPC_ADDR"},
	{name: "wrong subcommand", kind: "Deployment", object: "odin-admin", path: "spec.template.spec.containers.0.args", value: []any{"authz"}, wantErr: "do not run `odin admin`"},
	{name: "selector misses pod labels", kind: "Deployment", object: "odin-authz", path: "spec.selector.matchLabels", value: map[string]any{"app": "other"}, wantErr: "does not match the pod labels"},
	{name: "unknown service account", kind: "Deployment", object: "odin-authz", path: "spec.template.spec.serviceAccountName", value: "default", wantErr: "serviceAccountName"},
	{name: "unknown Deployment field", kind: "Deployment", object: "odin-authz", path: "spec.template.spec.containers.0.readinesProbe", value: map[string]any{}, wantErr: "unknown field"},
	{name: "probe port of the wrong type", kind: "Deployment", object: "odin-admin", path: "spec.template.spec.containers.0.readinessProbe.httpGet.port", value: true, wantErr: "as *v1.Deployment"},
	// Migration Job
	{name: "migration runs authz", kind: "Job", object: "odin-migrate", path: "spec.template.spec.containers.0.args", value: []any{"authz"}, wantErr: "do not run `odin migrate`"},
	{name: "migration on another database", kind: "Job", object: "odin-migrate", path: "spec.template.spec.containers.0.env.0.valueFrom.secretKeyRef.name", value: "other-secrets", wantErr: "migrates the database of Secret other-secrets/database-url"},
	{name: "migration database URL in plain text", kind: "Job", object: "odin-migrate", path: "spec.template.spec.containers.0.env.0", value: map[string]any{"name": "ODIN_DATABASE_URL", "value": "postgres://odin@db/odin"}, wantErr: "ODIN_DATABASE_URL must come from a Secret"},
	{name: "migration with a sidecar", kind: "Job", object: "odin-migrate", path: "spec.template.metadata.labels", value: map[string]any{"app.kubernetes.io/name": "odin-migrate"}, wantErr: "never completes"},
	{name: "migration restarts always", kind: "Job", object: "odin-migrate", path: "spec.template.spec.restartPolicy", value: "Always", wantErr: "restartPolicy"},
	{name: "migration with another image", kind: "Job", object: "odin-migrate", path: "spec.template.spec.containers.0.image", value: "ghcr.io/odin-scan/odin-authz:v0.0.9", wantErr: "migrate with the release you deploy"},
	{name: "migration as root", kind: "Job", object: "odin-migrate", path: "spec.template.spec.containers.0.securityContext.runAsNonRoot", value: false, wantErr: "runAsNonRoot must be true"},
	{name: "unknown Job field", kind: "Job", object: "odin-migrate", path: "spec.backofLimit", value: 3, wantErr: "unknown field"},
	// Services and the rest
	{name: "service targetPort unknown", kind: "Service", object: "odin-authz", path: "spec.ports.0.targetPort", value: "grcp", wantErr: "targetPort grcp"},
	{name: "service selects nothing", kind: "Service", object: "odin-admin", path: "spec.selector", value: map[string]any{"app.kubernetes.io/name": "admin"}, wantErr: "selects no Deployment"},
	{name: "service port protocol unknown", kind: "Service", object: "odin-authz", path: "spec.ports.0.appProtocol", wantErr: "appProtocol"},
	{name: "PDB blocks drains", kind: "PodDisruptionBudget", object: "odin-authz", path: "spec.minAvailable", value: 2, wantErr: "minAvailable 2"},
	{name: "unknown namespace", kind: "Service", object: "odin-admin", path: "metadata.namespace", value: "odin-system", wantErr: `namespace "odin-system" is not created`},
	{name: "unexpected kind", kind: "Namespace", object: "odin", path: "kind", value: "ConfigMap", wantErr: "unexpected kind"},
}

func TestIstioBrokenManifestsFail(t *testing.T) {
	for _, tc := range brokenIstioCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ms := loadManifests(t)
			setPath(t, findObject(t, ms, tc.kind, tc.object), tc.path, tc.value)
			err := checkManifests(ms)
			if err == nil {
				t.Fatalf("broken manifests accepted; want an error mentioning %q", tc.wantErr)
			}
			if !mentions(err, tc.wantErr) {
				t.Errorf("error does not mention %q:\n%v", tc.wantErr, err)
			}
		})
	}
}

// findObject returns the document of the given kind and metadata.name.
func findObject(t *testing.T, ms []manifest, kind, name string) map[string]any {
	t.Helper()
	for _, m := range ms {
		meta, _ := m.doc["metadata"].(map[string]any)
		if m.doc["kind"] == kind && meta["name"] == name {
			return m.doc
		}
	}
	t.Fatalf("no %s %q", kind, name)
	return nil
}

// setPath sets the value at a dotted path (numbers index lists), or deletes
// it when value is nil. Every step but the last must exist.
func setPath(t *testing.T, doc map[string]any, path string, value any) {
	t.Helper()
	parts := strings.Split(path, ".")
	var cur any = doc
	for i, p := range parts {
		last := i == len(parts)-1
		switch node := cur.(type) {
		case map[string]any:
			if last {
				if value == nil {
					if _, ok := node[p]; !ok {
						t.Fatalf("%s: nothing to delete", path)
					}
					delete(node, p)
				} else {
					node[p] = value
				}
				return
			}
			cur = node[p]
		case []any:
			n, err := strconv.Atoi(p)
			if err != nil || n >= len(node) {
				t.Fatalf("%s: bad list index %q", path, p)
			}
			if last {
				if value == nil {
					t.Fatalf("%s: deleting list elements is not supported", path)
				}
				node[n] = value
				return
			}
			cur = node[n]
		default:
			t.Fatalf("%s: no such path at %q", path, p)
		}
	}
}
