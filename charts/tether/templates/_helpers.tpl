{{/*
The chart name, or nameOverride.
*/}}
{{- define "tether.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The full name of the release's objects: fullnameOverride, else <release>-<name>,
or just <release> when it already contains the name. Truncated to 63 characters,
the limit of a DNS label, which some objects' names are.
*/}}
{{- define "tether.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
chart-version, for the helm.sh/chart label.
*/}}
{{- define "tether.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels of every object of the release.
*/}}
{{- define "tether.labels" -}}
helm.sh/chart: {{ include "tether.chart" . }}
{{ include "tether.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Labels that select the gateway's pods. They never change after install: a
Deployment's selector is immutable.
*/}}
{{- define "tether.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tether.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/*
Labels that select this release's session pods: the gateway adds managed-by=tether
to every pod it starts (activator/kube LabelManagedBy), and the pod template adds
the release. The NetworkPolicy selects with these.
*/}}
{{- define "tether.sessionSelectorLabels" -}}
app.kubernetes.io/managed-by: tether
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: session
{{- end -}}

{{/*
The gateway's ServiceAccount.
*/}}
{{- define "tether.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tether.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The namespace of the session pods (TETHER_NAMESPACE).
*/}}
{{- define "tether.sessionsNamespace" -}}
{{- default .Release.Namespace .Values.sessionsNamespace -}}
{{- end -}}

{{/*
An image reference from {repository, tag, digest}; the tag defaults to appVersion.
Call with (dict "image" .Values.image "context" $).
*/}}
{{- define "tether.image" -}}
{{- $tag := default .context.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
A Go duration ("90s", "1h30m", "500ms", "0") in whole seconds, rounded up. Fails
on anything else, naming the value, so that a typo never becomes a 0s grace period.
Call with (list "config.shutdownGrace" .Values.config.shutdownGrace).
*/}}
{{- define "tether.seconds" -}}
{{- $name := index . 0 -}}
{{- $value := toString (index . 1) -}}
{{- if not (regexMatch "^(0|([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$" $value) -}}
{{- fail (printf "%s: %q is not a Go duration such as 30s or 1m30s" $name $value) -}}
{{- end -}}
{{- $units := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" $value -1 -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" . -}}
{{- $unit := trimPrefix $number . -}}
{{- $total = addf $total (mulf (float64 $number) (get $units $unit)) -}}
{{- end -}}
{{- ceil $total | int64 -}}
{{- end -}}

{{/*
The gateway's drain, in seconds: on SIGTERM it waits config.drainDelay, gives open
streams config.shutdownGrace, then waits up to config.stopGrace + 5s for the last
pod deletes (cmd/tether/main.go). The pod's grace period must cover all of it.
*/}}
{{- define "tether.drainSeconds" -}}
{{- $c := .Values.config -}}
{{- $delay := include "tether.seconds" (list "config.drainDelay" (default "0s" $c.drainDelay)) | int64 -}}
{{- $grace := include "tether.seconds" (list "config.shutdownGrace" (default "30s" $c.shutdownGrace)) | int64 -}}
{{- $stop := include "tether.seconds" (list "config.stopGrace" (default "10s" $c.stopGrace)) | int64 -}}
{{- add $delay $grace $stop 5 -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds of the gateway: the value, if set and not below the
drain, else the drain.
*/}}
{{- define "tether.terminationGracePeriodSeconds" -}}
{{- $drain := include "tether.drainSeconds" . | int64 -}}
{{- $set := .Values.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $set -}}
{{- $drain -}}
{{- else if lt (int64 $set) $drain -}}
{{- fail (printf "terminationGracePeriodSeconds: %d is shorter than the gateway's drain, %d s (config.drainDelay + config.shutdownGrace + config.stopGrace + 5s); raise it or leave it null to compute it" (int64 $set) $drain) -}}
{{- else -}}
{{- int64 $set -}}
{{- end -}}
{{- end -}}

{{/*
An environment variable's value from a values scalar or list, as the gateway parses
it: numbers without exponent (Helm reads YAML numbers as float64, and 1e+06 is not
an int), lists joined with commas, and an empty list as "," (the gateway's way of
saying "none", since an empty variable means unset).
*/}}
{{- define "tether.envValue" -}}
{{- if kindIs "slice" . -}}
{{- if . }}{{ join "," . }}{{ else }},{{ end -}}
{{- else if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/*
Where the pod template ConfigMap and the TLS Secret are mounted in the gateway.
*/}}
{{- define "tether.podTemplateDir" -}}/etc/tether/session-pod{{- end -}}
{{- define "tether.podTemplateFile" -}}pod-template.yaml{{- end -}}
{{- define "tether.tlsDir" -}}/etc/tether/tls{{- end -}}

{{/*
The session pod template: a PodTemplateSpec that the gateway reads from
TETHER_POD_TEMPLATE and turns into one pod per session (activator/kube Build). Its
serving container has the port named grpc.
*/}}
{{- define "tether.sessionPodTemplate" -}}
{{- $p := .Values.sessionPod -}}
{{- with $p.readinessProbe }}{{ with .grpc }}
{{- if ne (int64 .port) (int64 $p.grpcPort) -}}
{{- fail (printf "sessionPod.readinessProbe.grpc.port (%d) must be sessionPod.grpcPort (%d): the probe would ask a port nothing listens on" (int64 .port) (int64 $p.grpcPort)) -}}
{{- end -}}
{{- end }}{{ end -}}
metadata:
  labels:
    {{- /* The selector labels win over sessionPod.labels: the NetworkPolicy selects with them. */}}
    {{- $labels := merge (fromYaml (include "tether.sessionSelectorLabels" .)) (dict "app.kubernetes.io/name" (include "tether.name" .)) (default dict $p.labels) }}
    {{- toYaml $labels | nindent 4 }}
  {{- with $p.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  automountServiceAccountToken: {{ $p.automountServiceAccountToken }}
  {{- with $p.serviceAccountName }}
  serviceAccountName: {{ . }}
  {{- end }}
  {{- with $p.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $p.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $p.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- if not (kindIs "invalid" $p.terminationGracePeriodSeconds) }}
  terminationGracePeriodSeconds: {{ int64 $p.terminationGracePeriodSeconds }}
  {{- end }}
  {{- with $p.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $p.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $p.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $p.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: session
      image: {{ include "tether.image" (dict "image" $p.image "context" .) | quote }}
      imagePullPolicy: {{ $p.image.pullPolicy }}
      {{- with $p.command }}
      command:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $p.args }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: grpc
          containerPort: {{ int64 $p.grpcPort }}
          protocol: TCP
      {{- with $p.env }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $p.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $p.volumeMounts }}
      volumeMounts:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $p.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $p.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  {{- with $p.volumes }}
  volumes:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
