{{/* Names and labels. */}}
{{- define "livefuse.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "livefuse.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "livefuse.originSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: origin
{{- end -}}

{{- define "livefuse.edgeSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: edge
{{- end -}}

{{- define "livefuse.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "livefuse.secretName" -}}
{{- if .Values.secrets.create -}}{{ include "livefuse.fullname" . }}-secrets{{- else -}}{{ required "secrets.existingSecret is required (or secrets.create)" .Values.secrets.existingSecret }}{{- end -}}
{{- end -}}

{{/* durationSeconds turns a Go duration (30s, 2m, 1m30s, 500ms) into whole seconds, rounded up. */}}
{{- define "livefuse.durationSeconds" -}}
{{- $d := toString . -}}
{{- if not (regexMatch "^([0-9]+(ms|s|m|h))+$" $d) -}}
{{- fail (printf "duration %q: want a Go duration such as 30s or 1m30s" $d) -}}
{{- end -}}
{{- $ms := 0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h)" $d -1 -}}
{{- $n := regexFind "^[0-9]+" . | atoi -}}
{{- $u := trimPrefix (regexFind "^[0-9]+" .) . -}}
{{- if eq $u "ms" -}}{{- $ms = add $ms $n -}}
{{- else if eq $u "s" -}}{{- $ms = add $ms (mul $n 1000) -}}
{{- else if eq $u "m" -}}{{- $ms = add $ms (mul $n 60000) -}}
{{- else -}}{{- $ms = add $ms (mul $n 3600000) -}}
{{- end -}}
{{- end -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{/* terminationGracePeriodSeconds: drain + shutdown + margin. */}}
{{- define "livefuse.gracePeriod" -}}
{{- add (include "livefuse.durationSeconds" .Values.drain.timeout | atoi) (include "livefuse.durationSeconds" .Values.shutdownTimeout | atoi) (int .Values.drain.margin) (int .Values.drain.endpointRemovalSeconds) -}}
{{- end -}}

{{/*
livefuse.config renders one unit's livefuse.yaml template: the chart's
settings, values.config merged over them, secrets as ${LIVEFUSE_*}
placeholders that the render-config init container fills from the Secret.
Call with (dict "root" $ "unit" $unit).
*/}}
{{- define "livefuse.config" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $full := include "livefuse.fullname" $root -}}
{{- $units := list -}}
{{- range $v.units -}}
{{- $units = append $units (dict "name" .name "relay" (printf "%s-%s:%d" $full .name (int $v.ports.rtmp))) -}}
{{- end -}}
{{- $streams := list -}}
{{- range $i, $s := $v.streams -}}
{{- $st := omit $s "publishTokenKey" "playKeyKey" -}}
{{- $_ := set $st "publish_token" (printf "${LIVEFUSE_PUBLISH_TOKEN_%d}" $i) -}}
{{- if $s.playKeyKey -}}{{- $_ := set $st "play_key" (printf "${LIVEFUSE_PLAY_KEY_%d}" $i) -}}{{- end -}}
{{- $streams = append $streams $st -}}
{{- end -}}
{{- $cfg := dict
  "data_dir" "/var/lib/livefuse"
  "log_level" $v.logLevel
  "unit" .unit.name
  "units" $units
  "relay_secret" "${LIVEFUSE_RELAY_SECRET}"
  "shutdown_timeout" $v.shutdownTimeout
  "drain_timeout" $v.drain.timeout
  "rtmp" (dict "addr" (printf ":%d" (int $v.ports.rtmp)))
  "rtsp" (dict "addr" (printf ":%d" (int $v.ports.rtsp)) "udp_rtp_addr" (printf ":%d" (int $v.ports.rtp)) "udp_rtcp_addr" (printf ":%d" (add1 (int $v.ports.rtp))))
  "http" (dict "addr" (printf ":%d" (int $v.ports.http)))
  "lms" (dict
    "api_addr" (printf ":%d" (int $v.ports.api))
    "api_token" "${LIVEFUSE_API_TOKEN}"
    "key_prefix" $v.etcd.keyPrefix
    "etcd" (dict "endpoints" (required "etcd.endpoints: an external etcd is required" $v.etcd.endpoints) "dial_timeout" $v.etcd.dialTimeout))
  "streams" $streams
-}}
{{- if $v.kafka.brokers -}}
{{- $_ := set $cfg "bus" (dict "kafka" (dict "brokers" $v.kafka.brokers)) -}}
{{- end -}}
{{- if $v.recording.enabled -}}
{{- $rec := dict "sink" $v.recording.sink "public_url" $v.recording.publicURL "url_secret" "${LIVEFUSE_URL_SECRET}" -}}
{{- if eq $v.recording.sink "s3" -}}
{{- $s3 := $v.recording.s3 -}}
{{- $_ := set $rec "s3" (dict "endpoint" (required "recording.s3.endpoint" $s3.endpoint) "bucket" (required "recording.s3.bucket" $s3.bucket) "region" $s3.region "tls" $s3.tls "prefix" $s3.prefix "access_key" "${LIVEFUSE_S3_ACCESS_KEY}" "secret_key" "${LIVEFUSE_S3_SECRET_KEY}") -}}
{{- end -}}
{{- $_ := set $cfg "recording" $rec -}}
{{- end -}}
{{- $c := $v.config -}}
{{- range $path := list "relay_secret" "lms.api_token" "encryption.master_key" "recording.url_secret" "recording.s3.access_key" "recording.s3.secret_key" "recording.s3.session_token" -}}
{{- $parts := splitList "." $path -}}
{{- $found := $c -}}
{{- range $parts -}}{{- if kindIs "map" $found -}}{{- $found = get $found . -}}{{- else -}}{{- $found = "" -}}{{- end -}}{{- end -}}
{{- if $found -}}{{- fail (printf "config.%s: a secret, never in the ConfigMap; it comes from the Secret (secrets.keys)" $path) -}}{{- end -}}
{{- end -}}
{{- toYaml (mergeOverwrite $cfg (deepCopy $v.config)) -}}
{{- end -}}

{{/* Environment of the render-config init container: the Secret's keys. */}}
{{- define "livefuse.secretEnv" -}}
{{- $v := .Values -}}
{{- $sec := include "livefuse.secretName" . -}}
- name: LIVEFUSE_API_TOKEN
  valueFrom: {secretKeyRef: {name: {{ $sec }}, key: {{ $v.secrets.keys.apiToken }}}}
- name: LIVEFUSE_RELAY_SECRET
  valueFrom: {secretKeyRef: {name: {{ $sec }}, key: {{ $v.secrets.keys.relaySecret }}}}
{{- if $v.recording.enabled }}
- name: LIVEFUSE_URL_SECRET
  valueFrom: {secretKeyRef: {name: {{ $sec }}, key: {{ $v.secrets.keys.urlSecret }}}}
{{- end }}
{{- if and $v.recording.enabled (eq $v.recording.sink "s3") }}
- name: LIVEFUSE_S3_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ $sec }}, key: {{ $v.secrets.keys.s3AccessKey }}}}
- name: LIVEFUSE_S3_SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ $sec }}, key: {{ $v.secrets.keys.s3SecretKey }}}}
{{- end }}
{{- range $i, $s := $v.streams }}
- name: LIVEFUSE_PUBLISH_TOKEN_{{ $i }}
  valueFrom: {secretKeyRef: {name: {{ $sec }}, key: {{ required (printf "streams[%d].publishTokenKey" $i) $s.publishTokenKey }}}}
{{- if $s.playKeyKey }}
- name: LIVEFUSE_PLAY_KEY_{{ $i }}
  valueFrom: {secretKeyRef: {name: {{ $sec }}, key: {{ $s.playKeyKey }}}}
{{- end }}
{{- end }}
{{- end -}}
