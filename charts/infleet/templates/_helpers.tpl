{{/* Names, labels and the decisions shared by several templates. */}}

{{- define "infleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "infleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else if contains (include "infleet.name" .) .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "infleet.name" .) | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "infleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "infleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "infleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: infleet
{{- /* Not "infleet": that value marks the model Deployments the operator owns and deletes. */}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "infleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "infleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- /* Peering (one active operator among several) is on whenever there is more than one pod. */}}
{{- define "infleet.peering" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{- define "infleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
