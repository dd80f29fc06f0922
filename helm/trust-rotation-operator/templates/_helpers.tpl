{{- define "tro.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tro.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tro.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tro.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tro.labels" -}}
{{ include "tro.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trust-rotation-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tro.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tro.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tro.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the rotation touches, each once (for per-namespace Roles). */}}
{{- define "tro.touchedNamespaces" -}}
{{- $t := .Values.trustAnchorRotation -}}
{{- $all := list $t.trustAnchor.namespace $t.previousAnchor.namespace $t.identityIssuer.namespace $t.trustRoots.namespace $t.controlPlane.namespace -}}
{{- $all | uniq | toJson -}}
{{- end -}}

{{/* Secrets the operator may read or write in namespace $ns (dict "root" . "ns" $ns). */}}
{{- define "tro.secretNames" -}}
{{- $t := .root.Values.trustAnchorRotation -}}
{{- $names := list -}}
{{- if eq $t.trustAnchor.namespace .ns }}{{ $names = append $names $t.trustAnchor.secret }}{{ end -}}
{{- if eq $t.previousAnchor.namespace .ns }}{{ $names = append $names $t.previousAnchor.name }}{{ end -}}
{{- if eq $t.identityIssuer.namespace .ns }}{{ $names = append $names $t.identityIssuer.secret }}{{ end -}}
{{- $names | uniq | toJson -}}
{{- end -}}

{{- define "tro.deploymentNames" -}}
{{- $cp := .Values.trustAnchorRotation.controlPlane -}}
{{- $names := concat (list $cp.proxyInjectorDeployment $cp.identityDeployment) $cp.otherDeployments -}}
{{- $names | uniq | toJson -}}
{{- end -}}
