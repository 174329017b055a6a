{{/* Names and labels, as `helm create` makes them. */}}
{{- define "sso-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sso-sidecar.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sso-sidecar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "sso-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The proxy pods; the component keeps them apart from the in-cluster Redis pods. */}}
{{- define "sso-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sso-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "sso-sidecar.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sso-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: session-store
{{- end }}

{{- define "sso-sidecar.secretName" -}}
{{- if .Values.secrets.create }}{{ include "sso-sidecar.fullname" . }}{{ else }}{{ required "secrets.existingSecret is required when secrets.create is false" .Values.secrets.existingSecret }}{{ end }}
{{- end }}

{{/* SSO_SIDECAR_UPSTREAM: the backend container on loopback unless `upstream` says otherwise. */}}
{{- define "sso-sidecar.upstream" -}}
{{- if .Values.upstream }}{{ .Values.upstream }}
{{- else if .Values.backend.enabled }}{{ printf "http://127.0.0.1:%v" .Values.backend.port }}
{{- else }}{{ fail "upstream is required when backend.enabled is false" }}
{{- end }}
{{- end }}

{{/* The upstream's TCP port, for the NetworkPolicy when the upstream is outside the pod. */}}
{{- define "sso-sidecar.upstreamPort" -}}
{{- $u := urlParse (include "sso-sidecar.upstream" .) }}
{{- $hostPort := splitList ":" $u.host }}
{{- if gt (len $hostPort) 1 }}{{ last $hostPort }}{{ else if eq $u.scheme "https" }}443{{ else }}80{{ end }}
{{- end }}

{{/* Whether the sidecar needs the backend's admin token. */}}
{{- define "sso-sidecar.needsAuthToken" -}}
{{- if and (eq .Values.authMode "oidc") (eq .Values.identity "openrag") }}true{{ end }}
{{- end }}

{{/* Reject combinations that would deploy but not work. Included by deployment.yaml. */}}
{{- define "sso-sidecar.validate" -}}
{{- if not (has .Values.authMode (list "oidc" "token")) }}
{{- fail (printf "authMode must be oidc or token, not %q" .Values.authMode) }}
{{- end }}
{{- if not (has .Values.identity (list "openrag" "headers")) }}
{{- fail (printf "identity must be openrag or headers, not %q" .Values.identity) }}
{{- end }}
{{- if not (has .Values.redis.mode (list "none" "url" "inCluster")) }}
{{- fail (printf "redis.mode must be none, url or inCluster, not %q" .Values.redis.mode) }}
{{- end }}
{{- if and (eq .Values.redis.mode "url") (not (or .Values.redis.url .Values.redis.existingSecret)) }}
{{- fail "redis.mode url needs redis.url or redis.existingSecret" }}
{{- end }}
{{- if and (eq .Values.authMode "oidc") (eq .Values.redis.mode "none") (gt (int .Values.replicaCount) 1) }}
{{- fail "replicaCount > 1 with redis.mode none: each pod would keep its own sessions; set redis.mode to url or inCluster, or replicaCount to 1" }}
{{- end }}
{{- end }}
