{{/* Object names are DNS labels: 63 characters at most. */}}
{{- define "darwin-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "darwin-operator.fullname" -}}
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

{{- define "darwin-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "darwin-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "darwin-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "darwin-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: darwin-operator
{{- end }}

{{- define "darwin-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "darwin-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "darwin-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "darwin-operator.peeringName" -}}
{{- default (include "darwin-operator.fullname" .) .Values.peering.name }}
{{- end }}

{{/* "true" when the operator watches watch.namespaces only, "" when it watches the cluster. */}}
{{- define "darwin-operator.namespaced" -}}
{{- if eq .Values.watch.scope "namespaces" }}true
{{- else if .Values.watch.namespaces }}
{{- fail "watch.namespaces is set but watch.scope is \"cluster\", which would watch (and grant) every namespace: set watch.scope=namespaces, or empty watch.namespaces" }}
{{- end }}
{{- end }}
