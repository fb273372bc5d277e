{{/*
Chart name, truncated to 63 characters (a DNS-1123 label).
*/}}
{{- define "sobert.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: the release name, prefixed with the chart name unless it
already contains it ("sobert" for `helm install sobert ...`). Truncated to 63 characters.
*/}}
{{- define "sobert.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "sobert.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels on every object.
*/}}
{{- define "sobert.labels" -}}
helm.sh/chart: {{ include "sobert.chart" . }}
{{ include "sobert.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: sobert
{{- end }}

{{/*
Selector labels (immutable in a Deployment: never add to these).
*/}}
{{- define "sobert.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sobert.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The controller's ServiceAccount name.
*/}}
{{- define "sobert.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sobert.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The controller image, repository:tag. The schema already rejects `latest` and an empty tag;
this guard also holds under --skip-schema-validation.
*/}}
{{- define "sobert.image" -}}
{{- $tag := toString .Values.image.tag }}
{{- if or (eq $tag "") (eq $tag "latest") }}
{{- fail "image.tag must be a pinned version, not empty or \"latest\"" }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
