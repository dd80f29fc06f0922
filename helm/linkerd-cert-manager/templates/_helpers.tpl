{{- define "linkerd-cert-manager.linkerdNamespace" -}}
{{- default .Release.Namespace .Values.linkerdNamespace -}}
{{- end -}}

{{- define "linkerd-cert-manager.labels" -}}
app.kubernetes.io/name: linkerd-cert-manager
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trust-rotation-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}
