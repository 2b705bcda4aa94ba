// Package envoy holds the proxy configuration users copy to put Odin authz in
// front of an API: Envoy bootstraps for the gRPC and HTTP ext_authz modes, and
// Kubernetes/Istio manifests under istio/. It has no Go code of its own; its
// tests check every file against Envoy's and Istio's proto schemas and against
// the rules those schemas cannot express (see README.md).
package envoy
