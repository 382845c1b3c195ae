{{/* Names and labels shared by every template. */}}

{{- define "sealvol.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sealvol.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sealvol.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sealvol.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "sealvol.controllerName" -}}{{ include "sealvol.fullname" . }}-controller{{- end -}}
{{- define "sealvol.nodeName" -}}{{ include "sealvol.fullname" . }}-node{{- end -}}
{{- define "sealvol.brokerName" -}}{{ include "sealvol.fullname" . }}-broker{{- end -}}

{{- define "sealvol.brokerSecret" -}}
{{- if .Values.broker.tls.certManager.enabled -}}
{{ include "sealvol.brokerName" . }}-tls
{{- else -}}
{{ required "broker.tls.secretName is required when broker TLS is on without cert-manager" .Values.broker.tls.secretName }}
{{- end -}}
{{- end -}}

{{- define "sealvol.nodeClientSecret" -}}
{{- if .Values.broker.tls.certManager.enabled -}}
{{ include "sealvol.nodeName" . }}-client-tls
{{- else -}}
{{ required "broker.tls.clientSecretName is required for mTLS without cert-manager" .Values.broker.tls.clientSecretName }}
{{- end -}}
{{- end -}}

{{/* The socket the driver serves CSI on, inside the shared socket directory. */}}
{{- define "sealvol.csiSocket" -}}/csi/csi.sock{{- end -}}
{{- define "sealvol.pluginDir" -}}{{ .Values.kubeletDir }}/plugins/{{ .Values.driverName }}{{- end -}}

{{/* The KMS provider URI passed to `sealvol controller --kms` (parameters:
docs/kms.md). The controller logs in with its own projected token whose
audience is kms.vault.auth.audience (see the vault-token volume). */}}
{{- define "sealvol.kmsURI" -}}
{{- if .Values.kms.uri -}}
{{ .Values.kms.uri }}
{{- else -}}
{{- $v := .Values.kms.vault -}}
{{- $u := urlParse $v.address -}}
{{- $q := list (printf "transit=%s" $v.transitMount) (printf "kv=%s" $v.kvMount) (printf "kv_prefix=%s" $v.kvPrefix) -}}
{{- if $v.keyTemplate -}}
{{- $q = append $q (printf "key_template=%s" (urlquery $v.keyTemplate)) -}}
{{- end -}}
{{- $q = append $q (printf "auth=%s" $v.auth.method) -}}
{{- $q = append $q (printf "auth_mount=%s" $v.auth.mount) -}}
{{- $q = append $q (printf "role=%s" $v.auth.role) -}}
{{- $q = append $q "jwt_file=/var/run/secrets/sealvol/vault/token" -}}
{{- if or $v.ca.secretName $v.ca.configMapName -}}
{{- $q = append $q (printf "ca_file=/etc/sealvol/vault-ca/%s" $v.ca.key) -}}
{{- end -}}
{{- if $v.namespace -}}
{{- $q = append $q (printf "namespace=%s" $v.namespace) -}}
{{- end -}}
vault+{{ $u.scheme }}://{{ $u.host }}?{{ join "&" $q }}
{{- end -}}
{{- end -}}

{{/* Sidecars of the controller: non-root (from the pod), nothing writable. */}}
{{- define "sealvol.sidecarSecurity" -}}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities: {drop: [ALL]}
{{- end -}}
