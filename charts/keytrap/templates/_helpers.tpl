{{/*
Names, labels and the pieces every keytrap pod shares.
*/}}

{{- define "keytrap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release name when it already contains the chart name.
Truncated to 52 so that suffixes such as "-worker" still fit the 63 of a DNS label.
*/}}
{{- define "keytrap.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "keytrap.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "keytrap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keytrap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "keytrap.labels" -}}
helm.sh/chart: {{ include "keytrap.chart" . }}
{{ include "keytrap.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keytrap
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of one component: (dict "ctx" $ "component" "api").
*/}}
{{- define "keytrap.componentLabels" -}}
{{ include "keytrap.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "keytrap.componentSelectorLabels" -}}
{{ include "keytrap.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Metadata annotations from commonAnnotations (empty when there are none).
*/}}
{{- define "keytrap.annotations" -}}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "keytrap.allinone" -}}
{{- if eq .Values.mode "allinone" }}true{{ end }}
{{- end }}

{{/*
The component whose pods serve a role: the all-in-one pod in allinone mode.
*/}}
{{- define "keytrap.podComponent" -}}
{{- if eq .ctx.Values.mode "allinone" }}allinone{{ else }}{{ .role }}{{ end }}
{{- end }}

{{/*
Whether a role runs at all: (dict "ctx" $ "role" "trap").
*/}}
{{- define "keytrap.roleEnabled" -}}
{{- if eq .ctx.Values.mode "allinone" }}
{{- if has .role .ctx.Values.allinone.roles }}true{{ end }}
{{- else if (index .ctx.Values .role).enabled }}true{{ end }}
{{- end }}

{{- define "keytrap.image" -}}
{{- $img := .Values.image }}
{{- $repo := $img.repository }}
{{- if $img.registry }}{{ $repo = printf "%s/%s" $img.registry $img.repository }}{{ end }}
{{- if $img.digest }}
{{- printf "%s@%s" $repo $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{- define "keytrap.testImage" -}}
{{- $img := .Values.tests.image }}
{{- $repo := $img.repository }}
{{- if $img.registry }}{{ $repo = printf "%s/%s" $img.registry $img.repository }}{{ end }}
{{- if $img.digest }}
{{- printf "%s@%s" $repo $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo $img.tag }}
{{- end }}
{{- end }}

{{- define "keytrap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keytrap.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "keytrap.authSecretName" -}}
{{- default (printf "%s-auth" (include "keytrap.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/*
Environment that locates the database. In distributed mode the password (or the whole
URL) comes from the user's Secret: PGPASSWORD is read by sqlx, so a password needs no
URL encoding and never appears in a URL.
*/}}
{{- define "keytrap.databaseEnv" -}}
{{- if eq .Values.mode "allinone" }}
- name: KEYTRAP_DATABASE_URL
  value: "sqlite:///data/keytrap.db"
- name: KEYTRAP_DATA_DIR
  value: /data
{{- else }}
{{- $db := .Values.externalDatabase }}
{{- if $db.existingSecretUrlKey }}
- name: KEYTRAP_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "externalDatabase.existingSecret is required with externalDatabase.existingSecretUrlKey" $db.existingSecret }}
      key: {{ $db.existingSecretUrlKey }}
{{- else }}
- name: KEYTRAP_DATABASE_URL
  value: {{ printf "postgres://%s@%s:%d/%s?sslmode=%s" (required "externalDatabase.user is required" $db.user) (required "externalDatabase.host is required in mode distributed (or use mode allinone)" $db.host) (int $db.port) (required "externalDatabase.database is required" $db.database) $db.sslMode | quote }}
{{- if $db.existingSecret }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $db.existingSecret }}
      key: {{ $db.existingSecretPasswordKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Master key and admin token, from the chart's Secret or the user's.
*/}}
{{- define "keytrap.authEnv" -}}
- name: KEYTRAP_MASTER_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "keytrap.authSecretName" . }}
      key: {{ .Values.auth.masterKeyKey }}
- name: KEYTRAP_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "keytrap.authSecretName" . }}
      key: {{ .Values.auth.adminTokenKey }}
{{- end }}

{{/*
KEYTRAP_TRAP_HOSTS as host=exchange,...
*/}}
{{- define "keytrap.trapHosts" -}}
{{- $pairs := list }}
{{- range .Values.trap.hosts }}
{{- $pairs = append $pairs (printf "%s=%s" (lower .host) .exchange) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/*
The keytrap container of a serve pod: (dict "ctx" $ "component" "api" "roles" (list "api")
"values" .Values.api).
*/}}
{{- define "keytrap.serveContainer" -}}
{{- $ := .ctx }}
{{- $v := $.Values -}}
- name: keytrap
  image: {{ include "keytrap.image" $ | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args: ["serve", "--role", {{ join "," .roles | quote }}]
  securityContext:
    {{- toYaml $v.containerSecurityContext | nindent 4 }}
  env:
    - name: KEYTRAP_LOG_FORMAT
      value: {{ $v.config.logFormat | quote }}
    - name: KEYTRAP_LOG
      value: {{ $v.config.logLevel | quote }}
    - name: KEYTRAP_HEALTH_LISTEN
      value: {{ printf "0.0.0.0:%d" (int $v.containerPorts.health) | quote }}
    {{- if has "api" .roles }}
    - name: KEYTRAP_API_LISTEN
      value: {{ printf "0.0.0.0:%d" (int $v.containerPorts.api) | quote }}
    {{- end }}
    {{- if has "trap" .roles }}
    - name: KEYTRAP_TRAP_LISTEN
      value: {{ printf "0.0.0.0:%d" (int $v.containerPorts.trap) | quote }}
    {{- with include "keytrap.trapHosts" $ }}
    - name: KEYTRAP_TRAP_HOSTS
      value: {{ . | quote }}
    {{- end }}
    {{- with $v.trap.trustedProxies }}
    - name: KEYTRAP_TRUSTED_PROXIES
      value: {{ join "," . | quote }}
    {{- end }}
    {{- end }}
    {{- include "keytrap.databaseEnv" $ | trim | nindent 4 }}
    {{- include "keytrap.authEnv" $ | trim | nindent 4 }}
    {{- with $v.config.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with .values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    {{- if has "api" .roles }}
    - name: api
      containerPort: {{ $v.containerPorts.api }}
      protocol: TCP
    {{- end }}
    {{- if has "trap" .roles }}
    - name: trap
      containerPort: {{ $v.containerPorts.trap }}
      protocol: TCP
    {{- end }}
    - name: health
      containerPort: {{ $v.containerPorts.health }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /healthz
      port: health
    {{- toYaml $v.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: health
    {{- toYaml $v.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: health
    {{- toYaml $v.probes.readiness | nindent 4 }}
  resources:
    {{- toYaml .values.resources | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- if eq $v.mode "allinone" }}
    - name: data
      mountPath: /data
    {{- end }}
{{- end }}

{{/*
Scheduling fields shared by the pod templates: (dict "values" .Values.api).
*/}}
{{- define "keytrap.scheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Whether the Service of a role carries the health port: every Service in distributed mode;
in allinone mode only one, so the single pod is scraped once (api, else trap, else worker).
*/}}
{{- define "keytrap.serviceHasHealth" -}}
{{- $roles := .ctx.Values.allinone.roles }}
{{- if ne .ctx.Values.mode "allinone" }}true
{{- else if eq .role "api" }}{{ if has "api" $roles }}true{{ end }}
{{- else if eq .role "trap" }}{{ if and (has "trap" $roles) (not (has "api" $roles)) }}true{{ end }}
{{- else if eq .role "worker" }}{{ if not (or (has "api" $roles) (has "trap" $roles)) }}true{{ end }}
{{- end }}
{{- end }}
