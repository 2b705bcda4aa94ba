package envoy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// The Kubernetes objects of istio/, decoded into just the fields the checks
// read. Each object is also decoded strictly into its k8s.io/api type
// (strictDecode), which refuses unknown fields and wrong types.

// k8sObject is the part of a Kubernetes object every check needs.
type k8sObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec json.RawMessage `json:"spec"`

	file string
}

func (o k8sObject) String() string {
	return fmt.Sprintf("%s %s/%s (%s)", o.Kind, o.Metadata.Namespace, o.Metadata.Name, o.file)
}

// portRef is a Kubernetes IntOrString port: a number or a port name.
type portRef struct {
	name   string
	number int
}

func (p portRef) String() string {
	if p.name != "" {
		return p.name
	}
	return strconv.Itoa(p.number)
}

func (p *portRef) UnmarshalJSON(b []byte) error {
	if bytes.HasPrefix(b, []byte(`"`)) {
		return json.Unmarshal(b, &p.name)
	}
	return json.Unmarshal(b, &p.number)
}

type securityContext struct {
	RunAsNonRoot             *bool `json:"runAsNonRoot"`
	AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
}

type probe struct {
	HTTPGet *struct {
		Path string  `json:"path"`
		Port portRef `json:"port"`
	} `json:"httpGet"`
}

type container struct {
	Name  string   `json:"name"`
	Image string   `json:"image"`
	Args  []string `json:"args"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	Env []struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `json:"name"`
				Key  string `json:"key"`
			} `json:"secretKeyRef"`
		} `json:"valueFrom"`
	} `json:"env"`
	ReadinessProbe  *probe           `json:"readinessProbe"`
	LivenessProbe   *probe           `json:"livenessProbe"`
	SecurityContext *securityContext `json:"securityContext"`
	Resources       struct {
		Requests map[string]string `json:"requests"`
	} `json:"resources"`
}

// resolve returns the container port a Service targetPort or probe port names.
func (c container) resolve(p portRef) (int, bool) {
	for _, cp := range c.Ports {
		if (p.name != "" && cp.Name == p.name) || (p.name == "" && cp.ContainerPort == p.number) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

type deploymentSpec struct {
	Replicas *int `json:"replicas"`
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	Template podTemplate `json:"template"`
}

// podTemplate is the pod template of a Deployment or a Job, as far as the
// checks read it.
type podTemplate struct {
	Metadata struct {
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ServiceAccountName string           `json:"serviceAccountName"`
		RestartPolicy      string           `json:"restartPolicy"`
		SecurityContext    *securityContext `json:"securityContext"`
		Containers         []container      `json:"containers"`
	} `json:"spec"`
}

type serviceSpec struct {
	Selector map[string]string `json:"selector"`
	Ports    []struct {
		Name        string  `json:"name"`
		Port        int     `json:"port"`
		TargetPort  portRef `json:"targetPort"`
		AppProtocol string  `json:"appProtocol"`
	} `json:"ports"`
}

type pdbSpec struct {
	MinAvailable portRef `json:"minAvailable"`
	Selector     struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
}

type jobSpec struct {
	Template podTemplate `json:"template"`
}

type job struct {
	k8sObject
	spec jobSpec
}

type deployment struct {
	k8sObject
	spec deploymentSpec
}

type service struct {
	k8sObject
	spec serviceSpec
}

// strictDecode decodes a Kubernetes object of these manifests into its
// k8s.io/api type, refusing unknown fields (as the API server's strict field
// validation does). Istio's kinds are decoded by their istio.io/api protos.
func strictDecode(kind string, js []byte) error {
	var target any
	switch kind {
	case "Namespace":
		target = &corev1.Namespace{}
	case "ServiceAccount":
		target = &corev1.ServiceAccount{}
	case "Service":
		target = &corev1.Service{}
	case "Deployment":
		target = &appsv1.Deployment{}
	case "Job":
		target = &batchv1.Job{}
	case "PodDisruptionBudget":
		target = &policyv1.PodDisruptionBudget{}
	default:
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(target); err != nil {
		return fmt.Errorf("as %T: %w", target, err)
	}
	return nil
}
