{{/* The release's full name, 63 characters at most. */}}
{{- define "remora.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "remora.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "remora.serviceAccountName" -}}
{{- default (include "remora.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "remora.adminSecret" -}}
{{- default (printf "%s-admin" (include "remora.fullname" .)) .Values.admin.existingSecret -}}
{{- end -}}

{{- define "remora.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Whether a kubernetes registry in config reads pods. */}}
{{- define "remora.needsPods" -}}
{{- $pods := .Values.rbac.pods -}}
{{- range .Values.config.registries -}}
{{- if and (eq (toString .type) "kubernetes") .kubernetes -}}
{{- if .kubernetes.pods }}{{ $pods = true }}{{ end -}}
{{- end -}}
{{- end -}}
{{- if $pods }}true{{ end -}}
{{- end -}}

{{/*
remora.yaml: config with the admin block the chart owns, and data_dir on
the remora-data volume unless config sets its own.
*/}}
{{- define "remora.config" -}}
{{- $admin := dict "address" (printf "0.0.0.0:%d" (int .Values.admin.port)) "token_file" "/etc/remora-admin/token" -}}
{{- toYaml (merge (dict "admin" $admin) (omit .Values.config "admin") (dict "data_dir" "/var/lib/remora")) -}}
{{- end -}}

{{/*
The native sidecar: an init container with restartPolicy: Always. Put it
first in a pod's initContainers, with the remora.volumes volumes and
serviceAccountName set to the chart's service account.
*/}}
{{- define "remora.sidecar" -}}
- name: remora
  image: {{ include "remora.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  restartPolicy: Always
  args: ["run", "-c", "/etc/remora/remora.yaml", "--log-format", "json"]
  ports:
    - {name: remora-admin, containerPort: {{ .Values.admin.port }}}
  startupProbe:
    httpGet: {path: /readyz, port: {{ .Values.admin.port }}}
    periodSeconds: {{ .Values.sidecar.startupProbe.periodSeconds }}
    failureThreshold: {{ .Values.sidecar.startupProbe.failureThreshold }}
  readinessProbe:
    httpGet: {path: /readyz, port: {{ .Values.admin.port }}}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /healthz, port: {{ .Values.admin.port }}}
    periodSeconds: 10
  lifecycle:
    preStop:
      exec:
        command: ["/usr/local/bin/remora", "drain", "-c", "/etc/remora/remora.yaml", "--wait", {{ .Values.sidecar.drainWait | quote }}]
  resources:
    {{- toYaml .Values.sidecar.resources | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
    capabilities: {drop: [ALL]}
    seccompProfile: {type: RuntimeDefault}
  volumeMounts:
    - {name: remora-config, mountPath: /etc/remora, readOnly: true}
    - {name: remora-admin, mountPath: /etc/remora-admin, readOnly: true}
    - {name: remora-data, mountPath: /var/lib/remora}
{{- end -}}

{{- define "remora.volumes" -}}
- name: remora-config
  configMap: {name: {{ include "remora.fullname" . }}}
- name: remora-admin
  secret: {secretName: {{ include "remora.adminSecret" . }}}
- name: remora-data
  emptyDir: {}
{{- end -}}
