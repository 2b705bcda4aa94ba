package helm_test

import (
	"encoding/json"
	"fmt"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"google.golang.org/protobuf/encoding/protojson"
	securityv1beta1 "istio.io/api/security/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// object is one rendered document decoded into its API type.
type object struct {
	document
	kind string
	meta metav1.ObjectMeta
	obj  any // *appsv1.Deployment, *corev1.Service, ... or *authorizationPolicy
}

func (o object) String() string {
	return fmt.Sprintf("%s %s (%s)", o.kind, o.meta.Name, o.source)
}

// authorizationPolicy is an Istio AuthorizationPolicy: Kubernetes metadata
// around the istio.io/api spec.
type authorizationPolicy struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            json.RawMessage   `json:"spec"`

	spec *securityv1beta1.AuthorizationPolicy
}

// newObject returns the Go type a rendered apiVersion and kind decode into.
// A kind missing here is an error: add it, with checks, when the chart
// renders a new one.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "batch/v1 Job":
		return &batchv1.Job{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, nil
	case "security.istio.io/v1 AuthorizationPolicy":
		return &authorizationPolicy{}, nil
	}
	return nil, fmt.Errorf("unexpected %s %s: add it to newObject and check it", apiVersion, kind)
}

// decode decodes a document strictly: an unknown or duplicate field, or a
// value of the wrong type, anywhere in it is an error (as the API server's
// strict field validation would report).
func decode(d document) (object, error) {
	var head metav1.TypeMeta
	if err := yaml.Unmarshal([]byte(d.yaml), &head); err != nil {
		return object{}, fmt.Errorf("%s: %w", d.source, err)
	}
	target, err := newObject(head.APIVersion, head.Kind)
	if err != nil {
		return object{}, fmt.Errorf("%s: %w", d.source, err)
	}
	if err := yaml.UnmarshalStrict([]byte(d.yaml), target); err != nil {
		return object{}, fmt.Errorf("%s: %s %s: %w", d.source, head.APIVersion, head.Kind, err)
	}
	o := object{document: d, kind: head.Kind, obj: target}
	if ap, ok := target.(*authorizationPolicy); ok {
		ap.spec = &securityv1beta1.AuthorizationPolicy{}
		// protojson refuses unknown fields and bad enum values.
		if err := protojson.Unmarshal(ap.Spec, ap.spec); err != nil {
			return object{}, fmt.Errorf("%s: AuthorizationPolicy spec: %w", d.source, err)
		}
		o.meta = ap.Metadata
	} else {
		o.meta = *accessorMeta(target)
	}
	return o, nil
}

// accessorMeta returns the ObjectMeta of a Kubernetes API object.
func accessorMeta(obj any) *metav1.ObjectMeta {
	type metaObject interface{ GetObjectMeta() metav1.Object }
	m, _ := obj.(metaObject).GetObjectMeta().(*metav1.ObjectMeta)
	return m
}
