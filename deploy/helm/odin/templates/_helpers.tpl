{{/*
Names. fullname is the release name when it contains the chart name (release
"odin" gives odin-authz, odin-admin, the names of envoy/istio/), else
<release>-<chart>. Kubernetes names stop at 63 characters; the longest suffix
added below is "-credentials".
*/}}
{{- define "odin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "odin.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "odin.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; call with (list $ "component"). */}}
{{- define "odin.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "odin.chart" $root }}
{{ include "odin.selectorLabels" . }}
app.kubernetes.io/part-of: odin
app.kubernetes.io/version: {{ include "odin.imageTag" $root | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- end }}

{{/* The labels a component's selectors match; call with (list $ "component"). */}}
{{- define "odin.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "odin.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "odin.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "odin.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "odin.imageTag" .) }}
{{- end }}
{{- end }}

{{- define "odin.authz.serviceAccountName" -}}
{{- default (printf "%s-authz" (include "odin.fullname" .)) .Values.authz.serviceAccount.name }}
{{- end }}

{{- define "odin.admin.serviceAccountName" -}}
{{- default (printf "%s-admin" (include "odin.fullname" .)) .Values.admin.serviceAccount.name }}
{{- end }}

{{/* The Secret this chart renders from secrets.*.value. */}}
{{- define "odin.secretName" -}}
{{- printf "%s-credentials" (include "odin.fullname" .) }}
{{- end }}

{{/*
The secret entries, in the order their variables are set, with their ODIN_*
variable and whether odin starts without them.
*/}}
{{- define "odin.secretEntries" -}}
databaseUrl: { env: ODIN_DATABASE_URL, optional: false }
redisUrl: { env: ODIN_REDIS_URL, optional: false, redis: true }
redisMacSecret: { env: ODIN_REDIS_MAC_SECRET, optional: false, redis: true }
redisMacSecretPrevious: { env: ODIN_REDIS_MAC_SECRET_PREVIOUS, optional: true, redis: true }
adminToken: { env: ODIN_ADMIN_TOKEN, optional: true }
webhookSecret: { env: ODIN_WEBHOOK_SECRET, optional: true }
outgoingWebhookSecret: { env: ODIN_OUTGOING_WEBHOOK_SECRET, optional: false }
githubSecretScanningToken: { env: ODIN_GITHUB_SECRET_SCANNING_TOKEN, optional: true }
{{- end }}

{{/*
Where one secret entry comes from, as YAML (name, key, optional) for a
secretKeyRef, or nothing when it is not configured. Call with (list $ "entry").
A value beside an existingSecret is refused rather than silently ignored.
*/}}
{{- define "odin.secretRef" -}}
{{- $root := index . 0 -}}
{{- $item := index . 1 -}}
{{- $e := index $root.Values.secrets $item -}}
{{- $meta := index (include "odin.secretEntries" $root | fromYaml) $item -}}
{{- if and $e.value (or $e.existingSecret $root.Values.secrets.existingSecret) }}
{{- fail (printf "secrets.%s.value is set, but so is an existingSecret (%s) that would win: unset one of them (secrets.existingSecret: \"\" to use values)" $item (default $root.Values.secrets.existingSecret $e.existingSecret)) }}
{{- end }}
{{- if $e.existingSecret }}
name: {{ $e.existingSecret }}
key: {{ $e.key }}
{{- else if $root.Values.secrets.existingSecret }}
name: {{ $root.Values.secrets.existingSecret }}
key: {{ $e.key }}
{{- if $meta.optional }}
optional: true
{{- end }}
{{- else if $e.value }}
name: {{ include "odin.secretName" $root }}
key: {{ $e.key }}
{{- end }}
{{- end }}

{{/*
The env entries for the given secrets; call with (list $ "entry" ...). A
required entry that is not configured fails the rendering.
*/}}
{{- define "odin.secretEnv" -}}
{{- $root := index . 0 -}}
{{- $entries := include "odin.secretEntries" $root | fromYaml -}}
{{- range $item := rest . }}
{{- $meta := index $entries $item -}}
{{- if or (not $meta.redis) $root.Values.redis.enabled }}
{{- $ref := include "odin.secretRef" (list $root $item) | fromYaml -}}
{{- if $ref }}
- name: {{ $meta.env }}
  valueFrom:
    secretKeyRef:
      {{- toYaml $ref | nindent 6 }}
{{- else if not $meta.optional }}
{{- fail (printf "secrets.%s is required (%s): set secrets.existingSecret, secrets.%s.existingSecret or secrets.%s.value" $item $meta.env $item $item) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Env shared by authz and admin: logging, Clerk, policy. */}}
{{- define "odin.commonEnv" -}}
- name: ODIN_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: ODIN_LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
{{- with .Values.config.jwksUrl }}
- name: ODIN_JWKS_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.jwtIssuer }}
- name: ODIN_JWT_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding the policy file, if any. */}}
{{- define "odin.policyConfigMap" -}}
{{- if .Values.policy.existingConfigMap }}
{{- .Values.policy.existingConfigMap }}
{{- else if .Values.policy.file }}
{{- printf "%s-policy" (include "odin.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Default topology spread: one replica per node and per zone where possible,
never blocking scheduling. Call with (list $ "component").
*/}}
{{- define "odin.topologySpread" -}}
{{- $root := index . 0 -}}
{{- $c := index $root.Values (index . 1) -}}
{{- if $c.topologySpreadConstraints }}
{{- toYaml $c.topologySpreadConstraints }}
{{- else }}
{{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
- maxSkew: 1
  topologyKey: {{ $key }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "odin.selectorLabels" (list $root (index $ 1)) | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}

{{/* A PodDisruptionBudget's budget: exactly one of minAvailable, maxUnavailable. */}}
{{- define "odin.pdbBudget" -}}
{{- if and (not (eq (toString .minAvailable) "")) (not (eq (toString .maxUnavailable) "")) }}
{{- fail "pdb: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- if not (eq (toString .minAvailable) "") }}
minAvailable: {{ .minAvailable }}
{{- else }}
maxUnavailable: {{ default 1 .maxUnavailable }}
{{- end }}
{{- end }}
