{{- define "juki-national.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jukinet
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A JukiNode's template and database, from a node-values dict (image, resources,
nodeSelector, tolerations, database). */}}
{{- define "jukinet.nodeParts" -}}
{{- if or .image .resources .nodeSelector .tolerations }}
template:
  {{- with .image }}
  image: {{ . | quote }}
  {{- end }}
  {{- with .resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
database:
  kind: {{ .database.kind }}
  {{- if eq .database.kind "Postgres" }}
  postgres:
    urlSecretRef:
      name: {{ required "database.postgres.urlSecretRef.name is required when database.kind is Postgres" .database.postgres.urlSecretRef.name | quote }}
      key: {{ .database.postgres.urlSecretRef.key | quote }}
  {{- else }}
  sqlite:
    storageSize: {{ .database.sqlite.storageSize | quote }}
    whenDeleted: {{ .database.sqlite.whenDeleted | default "Retain" }}
    {{- with .database.sqlite.storageClassName }}
    storageClassName: {{ . | quote }}
    {{- end }}
  {{- end }}
backups:
  storageSize: {{ .backups.storageSize | quote }}
  whenDeleted: {{ .backups.whenDeleted | default "Retain" }}
  {{- with .backups.storageClassName }}
  storageClassName: {{ . | quote }}
  {{- end }}
{{- end -}}

{{/* The peers admitted to every node of the release besides its callers in the tree: the
operator (its final request straight over mutual TLS), the API server (its service proxy
carries the final request to plain-HTTP nodes), and the release's extra peers. */}}
{{- define "jukinet.nodePeers" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .Values.operator.namespace }}
  podSelector:
    matchLabels:
      app.kubernetes.io/name: juki-operator
{{- range .Values.networkPolicy.apiServerCIDRs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- with .Values.networkPolicy.extraFrom }}
{{ toYaml . }}
{{- end }}
{{- end -}}
