{{/*
Names, labels and shared fragments of the fqdn-egress chart.
*/}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "fqdn-egress.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of every resource: fullnameOverride, else the release name, plus the
chart name when the release name does not already contain it. 63 characters at
most (DNS label).
*/}}
{{- define "fqdn-egress.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "fqdn-egress.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (a DaemonSet's selector is immutable). */}}
{{- define "fqdn-egress.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fqdn-egress.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end }}

{{/* Kubernetes recommended labels, on every object. */}}
{{- define "fqdn-egress.labels" -}}
helm.sh/chart: {{ include "fqdn-egress.chart" . }}
{{ include "fqdn-egress.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: fqdn-egress
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The agent's ServiceAccount. */}}
{{- define "fqdn-egress.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fqdn-egress.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "fqdn-egress.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the agent pins its maps and programs. */}}
{{- define "fqdn-egress.pinDir" -}}
{{- printf "%s/fqdn-egress" (trimSuffix "/" .Values.bpf.root) }}
{{- end }}

{{/*
Trusted resolvers, comma separated: dnsServers plus NodeLocal DNSCache's
address. Empty means auto-discovery from kube-system/kube-dns. An explicit
list replaces discovery, so nodeLocalDNS alone (which would trust only the
node-local cache and not kube-dns) is refused.
*/}}
{{- define "fqdn-egress.dnsServers" -}}
{{- $servers := .Values.dnsServers }}
{{- if .Values.nodeLocalDNS }}
{{- if not $servers }}
{{- fail "nodeLocalDNS: also list the kube-dns Service IP in dnsServers (an explicit resolver list replaces auto-discovery), e.g. --set dnsServers={10.96.0.10}" }}
{{- end }}
{{- $servers = append $servers "169.254.20.10" | uniq }}
{{- end }}
{{- join "," $servers }}
{{- end }}

{{/*
Capabilities the agent adds, each with the reason it is needed. All others
are dropped.
*/}}
{{- define "fqdn-egress.capabilities" -}}
drop:
  - ALL
add:
  # BPF: create maps, load the enforcer, learner and DNS socket filter, pin them (Linux 5.8+).
  - BPF
  # NET_ADMIN: attach tc filters and create the clsact qdisc on pod interfaces; netlink routes.
  - NET_ADMIN
  # PERFMON: the verifier checks the programs' packet parsing without Spectre v1/v4
  # sanitation only for perfmon_capable() loaders (bypass_spec_v1/v4); without it some
  # kernels reject the learner's bounded loops.
  - PERFMON
  # NET_RAW: the AF_PACKET socket that taps DNS answers for the agent.
  - NET_RAW
  {{- if .Values.capabilities.sysAdmin }}
  # SYS_ADMIN: asked for by bpf() on kernels without CAP_BPF (capabilities.sysAdmin=true).
  - SYS_ADMIN
  {{- end }}
  {{- range .Values.capabilities.extra }}
  - {{ . }}
  {{- end }}
{{- end }}
