{{/* Names ------------------------------------------------------------------------------- */}}

{{- define "wue.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wue.fullname" -}}
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

{{- define "wue.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wue.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wue.labels" -}}
helm.sh/chart: {{ include "wue.chart" . }}
{{ include "wue.selectorLabels" . }}
app.kubernetes.io/version: {{ include "wue.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: whatsapp-usage-exporter
{{- end }}

{{- define "wue.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wue.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "wue.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* The Secret the credentials come from: the user's, or the one this chart makes. */}}
{{- define "wue.secretName" -}}
{{- default (include "wue.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* Whether the chart makes its own Secret: only when a secret value is set. */}}
{{- define "wue.chartSecretData" -}}
{{- if not .Values.existingSecret }}
{{- with .Values.apiKey }}
api-key: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.username }}
username: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.password }}
password: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.metricsBearerToken }}
metrics-bearer-token: {{ . | b64enc | quote }}
{{- end }}
{{- if .Values.webhook.enabled }}
{{- with .Values.webhook.secret }}
webhook-secret: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.webhook.hmacSecret }}
webhook-hmac-secret: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.webhook.forwardUrl }}
webhook-forward-url: {{ . | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wue.stateDir" -}}/var/lib/whatsapp-usage-exporter{{- end }}
{{- define "wue.rateCardDir" -}}/etc/whatsapp-usage-exporter{{- end }}
{{- define "wue.spendBudgetsDir" -}}/etc/whatsapp-usage-exporter-spend{{- end }}

{{/* With shards, only shard 0 receives webhooks: dedupe keys live in each pod's own state. */}}
{{- define "wue.webhookServiceName" -}}
{{- if gt (int .Values.shards) 1 }}
{{- printf "%s-webhook" (include "wue.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- include "wue.fullname" . }}
{{- end }}
{{- end }}

{{/* Combinations the schema cannot express; each message names the values and the fix. */}}
{{- define "wue.validate" -}}
{{- $v := .Values }}
{{- if and $v.webhook.enabled (not (or $v.webhook.secret $v.webhook.hmacSecret $v.existingSecret $v.webhook.open)) }}
{{- fail "webhook.enabled needs authentication: set webhook.secret or webhook.hmacSecret (or existingSecret holding them), or webhook.open=true to accept unauthenticated webhooks" }}
{{- end }}
{{- if and (not $v.webhook.enabled) (or $v.webhook.forwardUrl $v.webhook.rateCard $v.ingress.enabled) }}
{{- fail "webhook.forwardUrl, webhook.rateCard and ingress need the webhook receiver: set webhook.enabled=true" }}
{{- end }}
{{- if and (not $v.existingSecret) (or $v.username $v.password) (not (and $v.username $v.password)) }}
{{- fail "username and password go together: set both for the bearer login, or neither" }}
{{- end }}
{{- if and (not $v.existingSecret) (or $v.apiKey $v.username) (not $v.partnerId) }}
{{- fail "partnerId is required with apiKey (or username and password)" }}
{{- end }}
{{- if and $v.partnerId (not (or $v.apiKey $v.username $v.existingSecret)) }}
{{- fail "partnerId needs apiKey (or username and password, or existingSecret holding them)" }}
{{- end }}
{{- if and (gt (int $v.shards) 1) $v.persistence.existingClaim }}
{{- fail "persistence.existingClaim cannot be shared by several shards: leave it empty so each shard gets its own volume" }}
{{- end }}
{{- end }}

{{/* The exporter's environment: fixed paths and ports, credentials by reference, then config. */}}
{{- define "wue.env" -}}
{{- $v := .Values }}
{{- $secret := include "wue.secretName" . }}
{{- $keys := $v.existingSecretKeys }}
{{- $external := ne $v.existingSecret "" }}
- name: D360_STATE_PATH
  value: {{ include "wue.stateDir" . }}/state.sqlite3
- name: D360_LISTEN_ADDRESS
  value: "0.0.0.0:10360"
{{- if gt (int $v.shards) 1 }}
- name: D360_SHARD_COUNT
  value: {{ $v.shards | int | toString | quote }}
- name: D360_SHARD_INDEX
  valueFrom:
    fieldRef:
      fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
{{- end }}
{{- if $v.partnerId }}
- name: D360_PARTNER_ID
  value: {{ $v.partnerId | quote }}
{{- else if $external }}
- name: D360_PARTNER_ID
  valueFrom:
    secretKeyRef: {name: {{ $secret | quote }}, key: {{ $keys.partnerId | quote }}, optional: true}
{{- end }}
{{- range $env, $pair := dict "D360_API_KEY" (list $v.apiKey "api-key" $keys.apiKey) "D360_USERNAME" (list $v.username "username" $keys.username) "D360_PASSWORD" (list $v.password "password" $keys.password) "D360_METRICS_BEARER_TOKEN" (list $v.metricsBearerToken "metrics-bearer-token" $keys.metricsBearerToken) }}
{{- if $external }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef: {name: {{ $secret | quote }}, key: {{ index $pair 2 | quote }}, optional: true}
{{- else if index $pair 0 }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef: {name: {{ $secret | quote }}, key: {{ index $pair 1 | quote }}}
{{- end }}
{{- end }}
{{- if $v.webhook.enabled }}
- name: D360_WEBHOOK_LISTEN_ADDRESS
  value: "0.0.0.0:10361"
{{- if $v.webhook.open }}
- name: D360_WEBHOOK_OPEN
  value: "true"
{{- end }}
{{- range $env, $pair := dict "D360_WEBHOOK_SECRET" (list $v.webhook.secret "webhook-secret" $keys.webhookSecret) "D360_WEBHOOK_HMAC_SECRET" (list $v.webhook.hmacSecret "webhook-hmac-secret" $keys.webhookHmacSecret) "D360_WEBHOOK_FORWARD_URL" (list $v.webhook.forwardUrl "webhook-forward-url" $keys.webhookForwardUrl) }}
{{- if $external }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef: {name: {{ $secret | quote }}, key: {{ index $pair 2 | quote }}, optional: true}
{{- else if index $pair 0 }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef: {name: {{ $secret | quote }}, key: {{ index $pair 1 | quote }}}
{{- end }}
{{- end }}
{{- if $v.webhook.workers }}
- name: D360_WEBHOOK_WORKERS
  value: {{ $v.webhook.workers | toString | quote }}
{{- end }}
{{- if $v.webhook.rateCard }}
- name: D360_WEBHOOK_RATE_CARD
  value: {{ include "wue.rateCardDir" . }}/rate-card.toml
{{- end }}
{{- end }}
{{- if $v.spendBudgets }}
- name: D360_SPEND_BUDGETS
  value: {{ include "wue.spendBudgetsDir" . }}/spend-budgets.toml
{{- end }}
{{- range $name, $value := $v.config }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pod template shared by the Deployment and the StatefulSet. */}}
{{- define "wue.podTemplate" -}}
{{- $v := .Values }}
metadata:
  labels:
    {{- include "wue.labels" . | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/secret: {{ include "wue.chartSecretData" . | sha256sum }}
    checksum/rate-card: {{ $v.webhook.rateCard | sha256sum }}
    checksum/spend-budgets: {{ $v.spendBudgets | sha256sum }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "wue.serviceAccountName" . }}
  # The exporter never talks to the Kubernetes API.
  automountServiceAccountToken: false
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  containers:
    - name: exporter
      image: "{{ $v.image.repository }}:{{ include "wue.imageTag" . }}"
      imagePullPolicy: {{ $v.image.pullPolicy }}
      {{- with $v.extraArgs }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      env:
        {{- include "wue.env" . | nindent 8 }}
      ports:
        - name: metrics
          containerPort: 10360
          protocol: TCP
        {{- if $v.webhook.enabled }}
        - name: webhook
          containerPort: 10361
          protocol: TCP
        {{- end }}
      startupProbe:
        httpGet: {path: /healthz, port: metrics}
        {{- toYaml $v.probes.startup | nindent 8 }}
      livenessProbe:
        httpGet: {path: /healthz, port: metrics}
        {{- toYaml $v.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet: {path: /readyz, port: metrics}
        {{- toYaml $v.probes.readiness | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      volumeMounts:
        - name: state
          mountPath: {{ include "wue.stateDir" . }}
        - name: tmp
          mountPath: /tmp
        {{- if and $v.webhook.enabled $v.webhook.rateCard }}
        - name: rate-card
          mountPath: {{ include "wue.rateCardDir" . }}
          readOnly: true
        {{- end }}
        {{- if $v.spendBudgets }}
        - name: spend-budgets
          mountPath: {{ include "wue.spendBudgetsDir" . }}
          readOnly: true
        {{- end }}
  volumes:
    {{- if le (int $v.shards) 1 }}
    - name: state
      {{- if $v.persistence.enabled }}
      persistentVolumeClaim:
        claimName: {{ default (include "wue.fullname" .) $v.persistence.existingClaim }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- else if not $v.persistence.enabled }}
    - name: state
      emptyDir: {}
    {{- end }}
    - name: tmp
      emptyDir:
        medium: Memory
        sizeLimit: 64Mi
    {{- if and $v.webhook.enabled $v.webhook.rateCard }}
    - name: rate-card
      configMap:
        name: {{ include "wue.fullname" . }}-rate-card
    {{- end }}
    {{- if $v.spendBudgets }}
    - name: spend-budgets
      configMap:
        name: {{ include "wue.fullname" . }}-spend-budgets
    {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{- define "wue.storageClass" -}}
{{- with .Values.persistence.storageClass }}
{{- if eq . "-" }}
storageClassName: ""
{{- else }}
storageClassName: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* A threshold as PromQL and people write it: 1000000, not 1e+06. */}}
{{- define "wue.number" -}}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- end }}
