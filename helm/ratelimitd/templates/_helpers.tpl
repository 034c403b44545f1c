{{/* Names: RELEASE-ratelimitd unless the release name already contains the chart name. */}}
{{- define "ratelimitd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ratelimitd.fullname" -}}
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
The memcached StatefulSet and its headless Service: at most 52 characters (fullname cut to 42
+ "-memcached"). A StatefulSet's pods carry controller-revision-hash = "<name>-<10-char hash>",
a label value (<= 63 characters): with a longer name the controller never creates the pods.
The per-node Services "<name>-N" stay well inside 63. terraform/modules/ratelimitd-values
computes the same name.
*/}}
{{- define "ratelimitd.memcached.fullname" -}}
{{- printf "%s-memcached" (include "ratelimitd.fullname" . | trunc 42 | trimSuffix "-") -}}
{{- end -}}

{{/* The daemon's backend.type as the values give it ("memcached" when unset, as the chart renders it). */}}
{{- define "ratelimitd.backendType" -}}
{{- $backend := .Values.config.backend | default dict -}}
{{- default "memcached" $backend.type -}}
{{- end -}}

{{/* "true" when the chart runs its own memcached StatefulSet. */}}
{{- define "ratelimitd.memcached.inCluster" -}}
{{- if and .Values.memcached.enabled (eq (include "ratelimitd.backendType" .) "memcached") -}}
true
{{- end -}}
{{- end -}}

{{/*
The readiness probe's path. probes.readiness.path when set; otherwise /healthz while
config.backend.on_failure is open (the daemon's default when unset) and /readyz when closed.
/readyz answers 503 while no memcached node answers: with on_failure open the pods still answer
200 then, so taking every pod out of the Service would turn "fail open" into "no endpoints".
Draining pods leave the endpoints either way (Kubernetes drops terminating pods; the daemon
closes its listeners on SIGTERM).
*/}}
{{- define "ratelimitd.readinessPath" -}}
{{- if .Values.probes.readiness.path -}}
{{- .Values.probes.readiness.path -}}
{{- else -}}
{{- $backend := .Values.config.backend | default dict -}}
{{- if eq (default "open" $backend.on_failure) "closed" -}}
/readyz
{{- else -}}
/healthz
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ratelimitd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ratelimitd.labels" -}}
helm.sh/chart: {{ include "ratelimitd.chart" . }}
{{ include "ratelimitd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ratelimitd
{{- end -}}

{{- define "ratelimitd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ratelimitd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: limiter
{{- end -}}

{{- define "ratelimitd.memcached.labels" -}}
helm.sh/chart: {{ include "ratelimitd.chart" . }}
{{ include "ratelimitd.memcached.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.memcached.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ratelimitd
{{- end -}}

{{- define "ratelimitd.memcached.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ratelimitd.name" . }}-memcached
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: memcached
{{- end -}}

{{- define "ratelimitd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ratelimitd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ratelimitd.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The memcached server list handed to ratelimitd, in ring order. */}}
{{- define "ratelimitd.memcachedServers" -}}
{{- $servers := list -}}
{{- if .Values.memcached.enabled -}}
{{- $fullname := include "ratelimitd.memcached.fullname" . -}}
{{- range $i, $_ := until (int .Values.memcached.replicas) -}}
{{- if eq $.Values.memcached.addressing "service" -}}
{{- $servers = append $servers (printf "%s-%d.%s.svc.%s:%d" $fullname $i $.Release.Namespace $.Values.clusterDomain (int $.Values.memcached.port)) -}}
{{- else -}}
{{- $servers = append $servers (printf "%s-%d.%s.%s.svc.%s:%d" $fullname $i $fullname $.Release.Namespace $.Values.clusterDomain (int $.Values.memcached.port)) -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- $servers = .Values.externalMemcached.servers -}}
{{- end -}}
{{- toJson $servers -}}
{{- end -}}

{{/* Checks the values cannot express in values.schema.json alone. */}}
{{- define "ratelimitd.validate" -}}
{{- $backend := .Values.config.backend | default dict -}}
{{- if not .Values.existingConfigSecret -}}
{{- if eq (default "memcached" $backend.type) "memcached" -}}
{{- if and .Values.memcached.enabled .Values.externalMemcached.servers -}}
{{- fail "memcached.enabled and externalMemcached.servers are exclusive: set memcached.enabled=false to use external servers" -}}
{{- end -}}
{{- if and (not .Values.memcached.enabled) (not .Values.externalMemcached.servers) -}}
{{- fail "config.backend.type is memcached: enable memcached (the chart's StatefulSet) or list externalMemcached.servers" -}}
{{- end -}}
{{- else -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) -}}
{{- fail "config.backend.type local counts per pod: it needs replicaCount 1 and autoscaling.enabled=false" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* A count that reaches memcached after its window's counter expired (window_ttl_s - 1 s after
      the window starts, at the earliest) would start the window over: the daemon refuses a
      timeout_ms that allows it, so the chart does too, before any pod crash-loops. */ -}}
{{- if eq (default "memcached" $backend.type) "memcached" -}}
{{- $ttl := int (default 3 $backend.window_ttl_s) -}}
{{- $timeout := int (default 20 $backend.timeout_ms) -}}
{{- if gt $timeout (mul (sub $ttl 2) 1000) -}}
{{- fail (printf "config.backend.timeout_ms (%d) must be at most (window_ttl_s - 2) x 1000 = %d ms, or a late count could start its window over; raise config.backend.window_ttl_s to %d" $timeout (mul (sub $ttl 2) 1000) (add (div (add $timeout 999) 1000) 2)) -}}
{{- end -}}
{{- end -}}
{{- $limits := .Values.config.limits | default dict -}}
{{- if hasKey ($limits.tiers | default dict) "default" -}}
{{- fail "config.limits.tiers: \"default\" is the policy name of config.limits.default; name the tier otherwise" -}}
{{- end -}}
{{- range $key, $tier := ($limits.keys | default dict) -}}
{{- if not (hasKey ($limits.tiers | default dict) $tier) -}}
{{- fail (printf "config.limits.keys: a key names tier %q, which is not in config.limits.tiers" $tier) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- if and .Values.tls.enabled (eq (int .Values.tls.port) (int .Values.service.port)) -}}
{{- fail "tls.port and service.port must differ" -}}
{{- end -}}
{{- if and .Values.admin.enabled (or (eq (int .Values.admin.port) (int .Values.service.port)) (and .Values.tls.enabled (eq (int .Values.admin.port) (int .Values.tls.port)))) -}}
{{- fail "admin.port must differ from service.port and tls.port" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (eq (int .Values.autoscaling.targetCPUUtilizationPercentage) 0) (not .Values.autoscaling.customMetric.enabled) -}}
{{- fail "autoscaling needs a metric: targetCPUUtilizationPercentage > 0 or customMetric.enabled" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) -}}
{{- fail "autoscaling.maxReplicas must be >= autoscaling.minReplicas" -}}
{{- end -}}
{{- /* A PDB that allows no eviction at all makes every node drain hang (Kubernetes rounds both
      fields' percentages up). */ -}}
{{- if .Values.podDisruptionBudget.enabled -}}
{{- $pdb := .Values.podDisruptionBudget -}}
{{- $pods := ternary (int .Values.autoscaling.minReplicas) (int .Values.replicaCount) .Values.autoscaling.enabled -}}
{{- $what := ternary "autoscaling.minReplicas" "replicaCount" .Values.autoscaling.enabled -}}
{{- if not (kindIs "invalid" $pdb.minAvailable) -}}
{{- if kindIs "string" $pdb.minAvailable -}}
{{- $pct := int (trimSuffix "%" $pdb.minAvailable) -}}
{{- if gt (mul $pct $pods) (mul 100 (sub $pods 1)) -}}
{{- fail (printf "podDisruptionBudget.minAvailable %s of %s (%d) rounds up to all %d pods: no pod could ever be evicted and node drains would hang; lower it" $pdb.minAvailable $what $pods $pods) -}}
{{- end -}}
{{- else if ge (int $pdb.minAvailable) $pods -}}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be below %s (%d): otherwise no pod could ever be evicted and node drains would hang" (int $pdb.minAvailable) $what $pods) -}}
{{- end -}}
{{- else if or (kindIs "invalid" $pdb.maxUnavailable) (eq (toString $pdb.maxUnavailable) "0") (eq (toString $pdb.maxUnavailable) "0%") -}}
{{- fail "podDisruptionBudget.maxUnavailable must be at least 1 (or a percentage above 0%) when minAvailable is not set: 0 allows no eviction and node drains would hang" -}}
{{- end -}}
{{- end -}}
{{- if and (include "ratelimitd.memcached.inCluster" .) .Values.memcached.podDisruptionBudget.enabled -}}
{{- $mu := .Values.memcached.podDisruptionBudget.maxUnavailable -}}
{{- if or (kindIs "invalid" $mu) (eq (toString $mu) "0") (eq (toString $mu) "0%") -}}
{{- fail "memcached.podDisruptionBudget.maxUnavailable must be at least 1 (or a percentage above 0%): 0 allows no eviction and node drains would hang" -}}
{{- end -}}
{{- end -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- $needMs := add (mul (int .Values.preStopSleepSeconds) 1000) (int (include "ratelimitd.shutdownGraceMs" .)) -}}
{{- if le (mul (int .Values.terminationGracePeriodSeconds) 1000) $needMs -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + shutdown_grace_ms (%d ms), or the kubelet kills in-flight requests" (int .Values.terminationGracePeriodSeconds) $needMs) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The daemon's drain time: config.shutdown_grace_ms, or the daemon's default when it is not
set. Not `default`, which takes 0 (a valid value: drain nothing) for unset. */}}
{{- define "ratelimitd.shutdownGraceMs" -}}
{{- $config := .Values.config | default dict -}}
{{- if and (hasKey $config "shutdown_grace_ms") (not (kindIs "invalid" $config.shutdown_grace_ms)) -}}
{{- int $config.shutdown_grace_ms -}}
{{- else -}}
5000
{{- end -}}
{{- end -}}

{{/* The grace period: preStop sleep + the daemon's drain time + 5 s of margin. */}}
{{- define "ratelimitd.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- int .Values.terminationGracePeriodSeconds -}}
{{- else -}}
{{- $graceMs := int (include "ratelimitd.shutdownGraceMs" .) -}}
{{- add (int .Values.preStopSleepSeconds) (div (add $graceMs 999) 1000) 5 -}}
{{- end -}}
{{- end -}}

{{/* ratelimitd.yaml: the user's config plus the listeners and servers the chart owns. */}}
{{- define "ratelimitd.configYaml" -}}
{{- $config := deepCopy (.Values.config | default dict) -}}
{{- $listen := list -}}
{{- range .Values.listenAddresses -}}
{{- $listen = append $listen (dict "address" . "port" (int $.Values.service.port)) -}}
{{- end -}}
{{- if .Values.admin.enabled -}}
{{- range .Values.listenAddresses -}}
{{- $listen = append $listen (dict "address" . "port" (int $.Values.admin.port) "role" "admin") -}}
{{- end -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- range .Values.listenAddresses -}}
{{- $listen = append $listen (dict "address" . "port" (int $.Values.tls.port) "tls" (dict "certificate" "/etc/ratelimitd/tls/tls.crt" "key" "/etc/ratelimitd/tls/tls.key")) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $config "listen" $listen -}}
{{- $backend := $config.backend | default dict -}}
{{- if eq (default "memcached" $backend.type) "memcached" -}}
{{- $_ := set $backend "servers" (include "ratelimitd.memcachedServers" . | fromJsonArray) -}}
{{- end -}}
{{- $_ := set $config "backend" $backend -}}
# ratelimitd.yaml rendered by the {{ include "ratelimitd.chart" . }} chart for release {{ .Release.Name }}.
{{ toYaml $config }}
{{- end -}}

{{- define "ratelimitd.configIsSecret" -}}
{{- $limits := .Values.config.limits | default dict -}}
{{- $backend := .Values.config.backend | default dict -}}
{{- if or (eq .Values.configSecret.mode "always") $limits.keys $backend.key_hash_secret -}}
true
{{- end -}}
{{- end -}}

{{- define "ratelimitd.configName" -}}
{{- default (printf "%s-config" (include "ratelimitd.fullname" .)) .Values.existingConfigSecret -}}
{{- end -}}

{{/* The container port the probes and the ServiceMonitor use. */}}
{{- define "ratelimitd.opsPort" -}}
{{- if .Values.admin.enabled -}}admin{{- else -}}http{{- end -}}
{{- end -}}

{{/* The job label a ServiceMonitor scrape gets: the name of the Service it finds the port on. */}}
{{- define "ratelimitd.metricsJob" -}}
{{- if .Values.admin.enabled -}}{{ include "ratelimitd.adminServiceName" . }}{{- else -}}{{ include "ratelimitd.fullname" . }}{{- end -}}
{{- end -}}

{{/* <fullname>-admin within the 63 characters of a Service name. */}}
{{- define "ratelimitd.adminServiceName" -}}
{{- printf "%s-admin" (include "ratelimitd.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end -}}
