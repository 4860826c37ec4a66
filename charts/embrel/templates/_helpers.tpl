{{/* Chart name, at most 63 characters (a label value). */}}
{{- define "embrel.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it already contains the chart name. */}}
{{- define "embrel.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "embrel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "embrel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "embrel.labels" -}}
{{ include "embrel.selectorLabels" . }}
app.kubernetes.io/part-of: embrel
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "embrel.serviceAccountName" -}}
{{- default (include "embrel.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "embrel.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The verbs the controller uses on releases, events and secrets (see docs/kubernetes.md). */}}
{{- define "embrel.rules" -}}
- apiGroups: [embrel.dev]
  resources: [embeddingreleases]
  verbs: [get, list, watch, patch, update]
- apiGroups: [embrel.dev]
  resources: [embeddingreleases/status]
  verbs: [get, patch, update]
- apiGroups: [embrel.dev]
  resources: [embeddingreleases/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
# Milvus credentials named by spec.milvus.secretRef.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
