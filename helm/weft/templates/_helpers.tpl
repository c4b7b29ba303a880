{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "weft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: "<release>-weft", or the release name when it already holds the
chart name, or fullnameOverride.
*/}}
{{- define "weft.fullname" -}}
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

{{/* Names of the two components' resources. */}}
{{- define "weft.coordinator.fullname" -}}
{{- printf "%s-coordinator" (include "weft.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "weft.worker.fullname" -}}
{{- printf "%s-worker" (include "weft.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "chart-version" for the helm.sh/chart label. */}}
{{- define "weft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "weft.labels" -}}
helm.sh/chart: {{ include "weft.chart" . }}
{{ include "weft.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: weft
{{- end }}

{{/* Labels that select this release's pods. */}}
{{- define "weft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Per-component labels; call with (dict "ctx" $ "component" "coordinator"). */}}
{{- define "weft.componentLabels" -}}
{{ include "weft.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- define "weft.componentSelectorLabels" -}}
{{ include "weft.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* ServiceAccount used by the pods. */}}
{{- define "weft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weft.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference. */}}
{{- define "weft.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
WEFT_NATS_URL: nats.url, required (the chart installs no NATS of its own).
*/}}
{{- define "weft.natsUrl" -}}
{{- $url := dig "url" "" (.Values.nats | default dict) | default "" | toString | trim }}
{{- required "nats.url is required: the URL of a NATS 2.10+ server with JetStream, e.g. nats://nats:4222 for the official NATS chart installed as release \"nats\" in this namespace (see helm/README.md)" $url }}
{{- end }}

{{/*
Name of the Secret holding the first admin's token (WEFT_ADMIN_TOKEN):
adminTokenSecret.name, or the chart's Secret made from adminToken. The token is
required (the coordinator exits at start without one, so it would crash-loop):
neither, both, or a token shorter than the coordinator accepts fail the render.
*/}}
{{- define "weft.adminTokenSecretName" -}}
{{- $token := .Values.adminToken | default "" | toString | trim }}
{{- $existing := dig "name" "" (.Values.adminTokenSecret | default dict) | default "" | toString | trim }}
{{- if and $token $existing }}
{{- fail "set either adminToken or adminTokenSecret.name, not both" }}
{{- else if $existing }}
{{- $existing }}
{{- else if $token }}
{{- if lt (len (splitList "" $token)) 24 }}
{{- fail "adminToken must be at least 24 characters (the coordinator refuses a shorter one); generate one with `openssl rand -base64 32`" }}
{{- end }}
{{- include "weft.fullname" . }}
{{- else }}
{{- fail "adminToken or adminTokenSecret.name is required: the coordinator refuses to start without the first admin's token (WEFT_ADMIN_TOKEN, at least 24 characters). Set adminToken (e.g. --set-string adminToken=$(openssl rand -base64 32)) for the chart to keep it in its Secret, or set adminTokenSecret.name (and adminTokenSecret.key) to an existing Secret holding it (see helm/README.md)" }}
{{- end }}
{{- end }}

{{/* Key inside that Secret. */}}
{{- define "weft.adminTokenSecretKey" -}}
{{- if include "weft.adminTokenInChartSecret" . }}
{{- print "admin-token" }}
{{- else }}
{{- required "adminTokenSecret.key is required with adminTokenSecret.name: the key inside that Secret holding the admin token" .Values.adminTokenSecret.key }}
{{- end }}
{{- end }}

{{/* "true" when the chart's Secret carries the admin token (adminToken given), else "". */}}
{{- define "weft.adminTokenInChartSecret" -}}
{{- $_ := include "weft.adminTokenSecretName" . }}
{{- if not (dig "name" "" (.Values.adminTokenSecret | default dict) | default "" | toString | trim) }}true{{ end }}
{{- end }}

{{/* Name of the Secret holding the encryption key ("" when there is none). */}}
{{- define "weft.encryptionKeySecretName" -}}
{{- if .Values.encryptionKeySecret.name }}
{{- .Values.encryptionKeySecret.name }}
{{- else if .Values.encryptionKey }}
{{- include "weft.fullname" . }}
{{- end }}
{{- end }}

{{/* Key inside that Secret. */}}
{{- define "weft.encryptionKeySecretKey" -}}
{{- if .Values.encryptionKeySecret.name }}
{{- .Values.encryptionKeySecret.key }}
{{- else }}
{{- print "encryption-key" }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds = the binary's grace (ms, rounded up to whole
seconds) + a margin, so the pod's limit follows the setting and cannot drift.
Call with (dict "ms" <grace in ms> "margin" <seconds>).
*/}}
{{- define "weft.terminationGrace" -}}
{{- add (div (add (int .ms) 999) 1000) (int .margin) }}
{{- end }}

{{/* Values that cannot work together fail the render with a clear message. */}}
{{- define "weft.validateValues" -}}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled are mutually exclusive: KEDA creates its own HPA for the worker Deployment. Set autoscaling.hpa.enabled=false to use KEDA." }}
{{- end }}
{{- if and .Values.encryptionKey .Values.encryptionKeySecret.name }}
{{- fail "set either encryptionKey or encryptionKeySecret.name, not both" }}
{{- end }}
{{- /* The admin token: required, one source (see weft.adminTokenSecretName). */}}
{{- $_ := include "weft.adminTokenSecretName" . }}
{{- if not (.Values.coordinator.config.adminName | default "" | toString | trim) }}
{{- fail "coordinator.config.adminName must not be empty: it is the first admin's user name (default admin)" }}
{{- end }}
{{- end }}
