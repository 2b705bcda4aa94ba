{{/*
Pod-level pieces shared by the authz and admin Deployments. Call with
(list $ "component").
*/}}

{{/*
Annotations that roll the pods when what they read at start changes: the
chart's Secret and the policy ConfigMap. (A Secret or ConfigMap you manage
yourself is not seen here: restart the Deployment after changing it.)
*/}}
{{- define "odin.podAnnotations" -}}
{{- $root := index . 0 -}}
{{- $c := index $root.Values (index . 1) -}}
checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
checksum/policy: {{ include (print $root.Template.BasePath "/policy-configmap.yaml") $root | sha256sum }}
{{- if $root.Values.istio.enabled }}
# Start the app once the sidecar can carry its PostgreSQL/Redis connections.
proxy.istio.io/config: '{"holdApplicationUntilProxyStarts": true}'
{{- end }}
{{- with $c.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "odin.podScheduling" -}}
{{- $root := index . 0 -}}
{{- $c := index $root.Values (index . 1) -}}
topologySpreadConstraints:
  {{- include "odin.topologySpread" . | nindent 2 }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Volumes for TLS and the policy file, and their mounts. */}}
{{- define "odin.volumes" -}}
{{- $root := index . 0 -}}
{{- if $root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.existingSecret is required with tls.enabled" $root.Values.tls.existingSecret }}
{{- end }}
{{- if and (eq (index . 1) "authz") (include "odin.policyConfigMap" $root) }}
- name: policy
  configMap:
    name: {{ include "odin.policyConfigMap" $root }}
{{- end }}
{{- end }}

{{/*
Mounted as directories, never with subPath: the kubelet then swaps in a
changed Secret or ConfigMap, and odin re-reads certificates and the policy.
*/}}
{{- define "odin.volumeMounts" -}}
{{- $root := index . 0 -}}
{{- if $root.Values.tls.enabled }}
- name: tls
  mountPath: /etc/odin/tls
  readOnly: true
{{- end }}
{{- if and (eq (index . 1) "authz") (include "odin.policyConfigMap" $root) }}
- name: policy
  mountPath: /etc/odin/policy
  readOnly: true
{{- end }}
{{- end }}

{{/* TLS env; call with (list $ "ODIN_TLS" or "ODIN_ADMIN_TLS"). */}}
{{- define "odin.tlsEnv" -}}
{{- $root := index . 0 -}}
{{- $prefix := index . 1 -}}
{{- if $root.Values.tls.enabled }}
- name: {{ $prefix }}_CERT_FILE
  value: /etc/odin/tls/tls.crt
- name: {{ $prefix }}_KEY_FILE
  value: /etc/odin/tls/tls.key
{{- if $root.Values.tls.clientAuth }}
- name: {{ $prefix }}_CLIENT_CA_FILE
  value: /etc/odin/tls/ca.crt
{{- end }}
{{- end }}
{{- end }}

{{/* A component's env map and extraEnv list; call with (list $ "component"). */}}
{{- define "odin.extraEnv" -}}
{{- $c := index (index . 0).Values (index . 1) -}}
{{- range $name, $value := $c.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with $c.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
