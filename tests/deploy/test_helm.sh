#!/usr/bin/env bash
# shellcheck disable=SC2015  # pass() and failed() always succeed, so A && pass || failed is if-then-else
# deploy.test_helm: offline checks of the Helm chart helm/ratelimitd.
#   RL_BINARY=build/ratelimitd RL_SOURCE_DIR=. bash tests/deploy/test_helm.sh
# For every value set in helm/ratelimitd/ci/ and helm/examples/values-production.yaml:
#   helm lint --strict; helm template; every object validated against the Kubernetes OpenAPI
#   schemas (kubernetes-models) plus the chart's invariants (tests/deploy/lib/validate-manifests.mjs);
#   the rendered ratelimitd.yaml accepted by `ratelimitd --check-config`.
# Then: rendered details, the checksum annotation follows the config, bad values fail through
# values.schema.json and the chart's own checks, the validator rejects what it must, and the
# `helm test` pod's script runs against a real ratelimitd.
set -euo pipefail
start=$SECONDS
src=${RL_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
bin=${RL_BINARY:-$src/build/ratelimitd}
chart=$src/helm/ratelimitd
[[ -x $bin ]] || { echo "RL_BINARY $bin is not executable"; exit 1; }

tools=$(timeout 300 "$src/scripts/deploy-tools" helm node | tail -n 1)
helm=$tools/bin/helm
export RL_NODE_MODULES=$tools/node/node_modules
validator=$src/tests/deploy/lib/validate-manifests.mjs

work=$(mktemp -d "${TMPDIR:-/tmp}/rl-test-helm.XXXXXX")
daemon_pid=""
mc_pid=""
cleanup() {
    local pid
    for pid in $daemon_pid $mc_pid; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
export HELM_CACHE_HOME=$work/helm-cache HELM_CONFIG_HOME=$work/helm-config HELM_DATA_HOME=$work/helm-data
echo "helm $("$helm" version --short), node $(node --version), chart $chart"

failures=0
pass() { echo "  ok   $*"; }
failed() { echo "  FAIL $*"; failures=$((failures + 1)); }
H() { timeout 60 "$helm" "$@"; }

# render NAME VALUES-FILE -> $work/NAME.yaml (helm lint --strict, then helm template)
render() {
    local name=$1 values=$2
    if H lint --strict "$chart" -f "$values" >"$work/$name.lint" 2>&1; then
        pass "$name: helm lint --strict"
    else
        failed "$name: helm lint --strict"; cat "$work/$name.lint"
    fi
    if H template rl "$chart" --namespace rl-ci -f "$values" >"$work/$name.yaml" 2>"$work/$name.err"; then
        pass "$name: helm template ($(grep -c '^kind:' "$work/$name.yaml") objects)"
    else
        failed "$name: helm template"; cat "$work/$name.err"; return 1
    fi
}

# check NAME VALIDATOR-OPTIONS...: schemas + invariants + ratelimitd --check-config
check() {
    local name=$1; shift
    if node "$validator" "$work/$name.yaml" --config-out "$work/$name.ratelimitd.yaml" "$@" >"$work/$name.val" 2>&1; then
        pass "$name: every object valid against the Kubernetes schemas, chart invariants hold ($(grep -c '  ok' "$work/$name.val") checks)"
    else
        failed "$name: manifest validation"; grep -v '  ok' "$work/$name.val"
    fi
    # --check-config parses and validates the file; it opens nothing else (TLS files, DNS).
    local out
    if out=$("$bin" --check-config -c "$work/$name.ratelimitd.yaml" 2>&1) && [[ $out == ok ]]; then
        pass "$name: the rendered ratelimitd.yaml passes ratelimitd --check-config"
    else
        failed "$name: ratelimitd --check-config: $out"; cat -n "$work/$name.ratelimitd.yaml"
    fi
}

echo "== value sets: lint, template, schemas, invariants, --check-config"
ci=$chart/ci
declare -A expect=(
    [default]="--expect-hpa present --expect-netpol absent --expect-tls off --expect-servicemonitor absent"
    [external-memcached]="--expect-hpa present --expect-netpol absent --expect-tls off --expect-servicemonitor present"
    [tls]="--expect-tls on --expect-netpol absent"
    [no-hpa]="--expect-hpa absent --expect-netpol absent"
    [networkpolicy]="--expect-netpol present --expect-servicemonitor present"
    [local-backend]="--expect-hpa absent --expect-pdb absent --expect-netpol absent"
)
for f in "$ci"/*-values.yaml; do
    name=$(basename "$f" -values.yaml)
    if [[ -z ${expect[$name]:-} ]]; then
        failed "ci value set $(basename "$f") has no expectations in this script"
        continue
    fi
    # shellcheck disable=SC2086  # word splitting of the option list is intended
    render "$name" "$f" && check "$name" ${expect[$name]}
done
render production "$src/helm/examples/values-production.yaml" &&
    check production --expect-hpa present --expect-netpol present --expect-servicemonitor present

echo "== rendered details"
r=$work
grep -q '^kind: ConfigMap' "$r/default.yaml" && ! grep -q '^kind: Secret' "$r/default.yaml" &&
    pass "default: no secrets in the config, so it is a ConfigMap" || failed "default: config kind"
grep -q 'rl-ratelimitd-memcached-2\.rl-ci\.svc\.cluster\.local:11211' "$r/default.ratelimitd.yaml" &&
    pass "default: memcached nodes by per-pod ClusterIP Service names" || failed "default: memcached names"
grep -q 'terminationGracePeriodSeconds: 15$' "$r/default.yaml" &&
    pass "default: terminationGracePeriodSeconds 15 = preStop 5 + shutdown_grace_ms 5000 + 5" || failed "default: grace period"
# 0 is a valid drain time, not "unset" (Helm's `default` would take it for 5000)
H template rl "$chart" --set config.shutdown_grace_ms=0 2>&1 |
    awk '/^---/ { d = 0 } /^kind: Deployment$/ { d = 1 } d && /terminationGracePeriodSeconds:/ { print $2 }' |
    grep -qx 10 &&
    pass "shutdown_grace_ms 0: terminationGracePeriodSeconds 10 = preStop 5 + 0 + 5" || failed "shutdown_grace_ms 0: grace period"
H template rl "$chart" --set config.shutdown_grace_ms=0 --set terminationGracePeriodSeconds=6 >/dev/null 2>&1 &&
    pass "accepted: shutdown_grace_ms 0 with terminationGracePeriodSeconds 6 > preStop 5" ||
    failed "refused: shutdown_grace_ms 0 with terminationGracePeriodSeconds 6"
# holders FILE STRING -> "Kind/name" of every ConfigMap or Secret whose data mentions STRING
holders() {
    node --input-type=module - "$1" "$2" <<'JS'
import fs from 'node:fs';
import path from 'node:path';
const YAML = await import(path.join(process.env.RL_NODE_MODULES, 'yaml/dist/index.js'));
const [file, needle] = process.argv.slice(2);
for (const o of YAML.parseAllDocuments(fs.readFileSync(file, 'utf8')).map((d) => d.toJS())) {
    if (o?.kind !== 'ConfigMap' && o?.kind !== 'Secret') continue;
    const vals = [...Object.values(o.data || {}).map((v) => (o.kind === 'Secret' ? Buffer.from(v, 'base64').toString() : v)),
        ...Object.values(o.stringData || {})];
    if (vals.some((v) => String(v).includes(needle))) console.log(`${o.kind}/${o.metadata.name}`);
}
JS
}
k=$(holders "$r/external-memcached.yaml" premium-key-1 | tr '\n' ' ')
h=$(holders "$r/external-memcached.yaml" ci-external-secret | tr '\n' ' ')
[[ $k == "Secret/rl-ratelimitd-config " && $h == "$k" ]] &&
    pass "external-memcached: API keys and key_hash_secret -> only in the Secret ($k)" ||
    failed "external-memcached: API key in [$k], key_hash_secret in [$h] (want only Secret/rl-ratelimitd-config)"
k=$(holders "$r/external-memcached.yaml" ratelimitd-helm-test | tr '\n' ' ')
# (the Secret's name, rl-ratelimitd-helm-test, contains the key's text: name lines are skipped)
! grep -v 'name:' <(awk '/^kind: Pod$/,/^---/' "$r/external-memcached.yaml") | grep -q 'ratelimitd-helm-test' &&
    [[ $k == "Secret/rl-ratelimitd-config Secret/rl-ratelimitd-helm-test " ]] &&
    pass "external-memcached: tests.apiKey only in Secrets ($k), not in the test pod's spec" ||
    failed "external-memcached: tests.apiKey in [$k] or in the test pod's spec"
[[ $(grep -c "address: '::'" "$r/tls.ratelimitd.yaml") == 3 && $(grep -c 'address: 0.0.0.0' "$r/tls.ratelimitd.yaml") == 3 &&
    $(grep -c 'role: admin' "$r/tls.ratelimitd.yaml") == 2 ]] &&
    pass "tls: listenAddresses 0.0.0.0 and :: each on the cleartext, the admin and the TLS port" || failed "tls: dual-stack listeners"
H template rl "$chart" --set 'imagePullSecrets[0].name=regcred' --show-only templates/tests/test-limit.yaml 2>&1 |
    grep -q 'name: regcred' && pass "imagePullSecrets reach the helm test pod" || failed "imagePullSecrets: helm test pod"
grep -q 'averageValue: "1500"' "$r/external-memcached.yaml" && grep -q 'name: ratelimitd_requests_per_second' "$r/external-memcached.yaml" &&
    pass "external-memcached: HPA custom Pods metric ratelimitd_requests_per_second" || failed "external-memcached: HPA custom metric"
grep -q 'minAvailable: 50%' "$r/external-memcached.yaml" && pass "external-memcached: PDB minAvailable 50%" || failed "external-memcached: PDB"
! grep -q '^kind: StatefulSet' "$r/external-memcached.yaml" && grep -q "fd00::7\]:11211" "$r/external-memcached.ratelimitd.yaml" &&
    pass "external-memcached: no StatefulSet; the external servers (incl. IPv6) are the ring" || failed "external-memcached: servers"
grep -q 'memcached-4\.rl-ratelimitd-memcached\.rl-ci\.svc\.cluster\.local:11211' "$r/no-hpa.ratelimitd.yaml" &&
    pass "no-hpa: 5 memcached nodes by headless pod names" || failed "no-hpa: memcached names"
grep -q 'terminationGracePeriodSeconds: 40$' "$r/no-hpa.yaml" && grep -q 'replicas: 4$' "$r/no-hpa.yaml" &&
    pass "no-hpa: replicas 4, explicit terminationGracePeriodSeconds 40 > 30 s drain" || failed "no-hpa: replicas/grace"
! grep -qi 'memcached' <(grep -A2 '^kind: \(StatefulSet\|Service\)$' "$r/local-backend.yaml") && ! grep -q 'servers:' "$r/local-backend.ratelimitd.yaml" &&
    pass "local-backend: no memcached objects, no servers in the config" || failed "local-backend: memcached rendered"
[[ $(grep -c '^kind: NetworkPolicy' "$r/networkpolicy.yaml") == 2 ]] && grep -q 'kubernetes.io/metadata.name: gateway' "$r/networkpolicy.yaml" &&
    pass "networkpolicy: memcached policy + ratelimitd ingress from allowedClients" || failed "networkpolicy: policies"
if H template rl "$chart" --namespace rl-ci --set existingConfigSecret=my-ratelimitd-config >"$r/existing.yaml" 2>&1 &&
    node "$validator" "$r/existing.yaml" --expect-config external --config-secret my-ratelimitd-config \
        --expect-readiness /healthz >"$r/existing.val" 2>&1 &&
    grep -q "^kind: StatefulSet" "$r/existing.yaml"; then
    pass "existingConfigSecret: no config rendered, pods mount that Secret, objects valid, chart memcached still there"
else
    failed "existingConfigSecret"; grep -v "  ok" "$r/existing.val" || tail -n 5 "$r/existing.yaml"
fi
if H install rl "$chart" --namespace rl-ci --dry-run=client >"$r/notes.txt" 2>&1 &&
    grep -q "curl -si --http2-prior-knowledge -H 'X-API-Key: demo-key'" "$r/notes.txt" &&
    grep -q 'http://rl-ratelimitd.rl-ci.svc:8080/limit' "$r/notes.txt" &&
    grep -q "^Counters: the chart's memcached StatefulSet (3 nodes" "$r/notes.txt"; then
    pass "NOTES.txt (helm install --dry-run=client) gives the curl --http2-prior-knowledge command and the memcached nodes"
else
    failed "NOTES.txt"; sed -n '/^NOTES:/,$p' "$r/notes.txt"
fi
t=$(H template rl "$chart" -f "$ci/external-memcached-values.yaml" --show-only templates/tests/test-limit.yaml)
grep -q 'helm.sh/hook: test' <<<"$t" && grep -A1 'name: LIMIT$' <<<"$t" | grep -q '"10"' && grep -A1 'name: HEADER$' <<<"$t" | grep -q 'X-Api-Token' &&
    pass "helm test pod: hook, LIMIT 10 (tier free of tests.apiKey), the configured key header" || failed "helm test pod"
# NOTES names the StatefulSet only when the chart runs one: not with the local store (whose values
# leave memcached.enabled at its default, true) nor with external memcached
for set in local-backend external-memcached; do
    notes=$(H install rl "$chart" --namespace rl-ci --dry-run=client -f "$ci/$set-values.yaml" 2>&1 | sed -n '/^NOTES:/,$p')
    want='^Counters: in-process'
    [[ $set == external-memcached ]] && want='^Counters: external memcached rl-cache'
    grep -q "$want" <<<"$notes" && ! grep -qi 'statefulset' <<<"$notes" &&
        pass "$set: NOTES.txt says where the counters live, no memcached StatefulSet line" ||
        { failed "$set: NOTES.txt"; grep -i 'counters\|statefulset' <<<"$notes" || true; }
done
# the local store counts per pod: no surge pod during an update (Recreate); the shared store
# rolls with a surge and no unavailable pod
grep -q '^    type: Recreate$' "$r/local-backend.yaml" && ! grep -q 'maxSurge' "$r/local-backend.yaml" &&
    grep -q 'maxSurge: 25%' "$r/default.yaml" && grep -q '^    type: RollingUpdate$' "$r/default.yaml" &&
    pass "local-backend: strategy Recreate (no second pod counting apart); default: RollingUpdate, maxSurge 25%" ||
    failed "update strategy: local-backend $(grep -A1 '^  strategy:' "$r/local-backend.yaml" | tail -n 1), default $(grep -A1 '^  strategy:' "$r/default.yaml" | tail -n 1)"

echo "== admin.enabled=false: probes and scrapes back on the http port, no admin listener"
H template rl "$chart" --namespace rl-ci -f "$ci/external-memcached-values.yaml" --set admin.enabled=false >"$work/noadmin.yaml" &&
    node "$validator" "$work/noadmin.yaml" --config-out "$work/noadmin.ratelimitd.yaml" --expect-servicemonitor present >"$work/noadmin.val" 2>&1 &&
    grep -q 'ok   liveness probe GET /healthz on port http' "$work/noadmin.val" &&
    grep -q 'ok   ServiceMonitor scrapes /metrics on port http' "$work/noadmin.val" &&
    ! grep -q 'role: admin' "$work/noadmin.ratelimitd.yaml" && ! grep -q 'name: rl-ratelimitd-admin' "$work/noadmin.yaml" &&
    grep -q 'job="rl-ratelimitd"' "$work/noadmin.yaml" &&
    pass "admin.enabled=false: probes and ServiceMonitor on http, no admin listener or Service, rules on job rl-ratelimitd" ||
    { failed "admin.enabled=false"; grep -v '  ok' "$work/noadmin.val"; }
grep -q 'job="rl-ratelimitd-admin"' "$work/external-memcached.yaml" &&
    pass "the alert rules select the admin Service's job (rl-ratelimitd-admin)" || failed "alert rules' job label"

echo "== the readiness probe follows on_failure"
# readiness HELM-ARGS... -> the Deployment's readiness probe path
readiness() {
    H template rl "$chart" --namespace rl-ci --show-only templates/deployment.yaml "$@" |
        sed -n '/^ *readinessProbe:/,/^ *path:/s/^ *path: *//p'
}
while read -r want args; do
    # shellcheck disable=SC2086  # word splitting of the helm arguments is intended
    got=$(readiness $args 2>&1 || true)
    [[ $got == "$want" ]] && pass "readiness $want with $args" || failed "readiness with $args: got '$got', want $want"
done <<'CASES'
/healthz --set config.backend.on_failure=open
/healthz --set config.backend.on_failure=null
/readyz --set config.backend.on_failure=closed
/readyz --set probes.readiness.path=/readyz
/healthz --set config.backend.on_failure=closed --set probes.readiness.path=/healthz
CASES
grep -q 'ok   readiness probe GET /readyz on port admin (on_failure closed' "$r/external-memcached.val" &&
    grep -q 'ok   readiness probe GET /healthz on port admin (on_failure open' "$r/default.val" &&
    pass "validator: readiness /readyz for external-memcached (on_failure closed), /healthz for default (open)" ||
    failed "validator readiness checks missing"

echo "== the memory limit holds server.max_connections unfinished request heads"
# DEPLOY.md: max_connections x 460 KiB + 32 MiB <= resources.limits.memory; validate-manifests.mjs
# computes it for every value set. The defaults and the production example, explicitly:
for set in default production; do
    line=$(grep '  ok   memory: ' "$r/$set.val" || true)
    [[ -n $line ]] && pass "$set: ${line#*ok   }" || { failed "$set: memory rule"; grep 'memory' "$r/$set.val" || true; }
done
for args in "--set config.server.max_connections=2300" "--set resources.limits.memory=512Mi" \
    "-f $ci/local-backend-values.yaml --set config.backend.local_max_keys=8000000"; do
    # shellcheck disable=SC2086  # word splitting of the helm arguments is intended
    H template rl "$chart" --namespace rl-ci $args >"$work/mem.yaml" 2>&1 || true
    node "$validator" "$work/mem.yaml" >"$work/mem.val" 2>&1 || true
    grep -q 'FAIL memory: ' "$work/mem.val" && pass "the memory rule catches $args alone" ||
        { failed "the memory rule missed $args"; grep memory "$work/mem.val" || true; }
done

echo "== memcached's arguments and memory limit"
# Helm prints a large number from a values file as 1e+06, which memcached reads as 1.
printf 'memcached:\n  maxConnections: 1000000\n  requestsPerEvent: 1000000\n' >"$work/big-mc.yaml"
H template rl "$chart" --namespace rl-ci -f "$work/big-mc.yaml" >"$work/big-mc.out" 2>&1 || true
if grep -q '"1000000"' "$work/big-mc.out" && ! grep -q 'e+0' "$work/big-mc.out"; then
    pass "memcached -c and -R render 1000000 as an integer"
else
    failed "memcached arguments in exponent form"; grep -n -e '"-c"' -e '"-R"' -A1 "$work/big-mc.out" || true
fi
# The hash table (8 bytes x 2^hashPower) is outside memcached's -m: 256 + 64 + 32 + 128 MiB at 24.
H template rl "$chart" --namespace rl-ci --set memcached.hashPower=24 >"$work/hp.out" 2>&1 || true
limit=$(sed -n '/- name: memcached$/,/securityContext:/p' "$work/hp.out" | grep -A1 'limits:' | grep -o 'memory: [0-9]*Mi' || true)
[[ $limit == "memory: 480Mi" ]] && pass "memcached's memory limit holds its hash table at hashPower 24 ($limit)" ||
    failed "memcached's memory limit at hashPower 24: '$limit', want 480Mi"

echo "== a long release name"
# Helm allows 53 characters; the memcached StatefulSet must stay <= 52 or it never gets pods.
long=rl-a-release-name-of-fifty-three-characters-abcdefghi
if [[ ${#long} -eq 53 ]] && H template "$long" "$chart" --namespace rl-ci >"$work/long.yaml" 2>"$work/long.err" &&
    node "$validator" "$work/long.yaml" --config-out "$work/long.ratelimitd.yaml" >"$work/long.val" 2>&1 &&
    "$bin" --check-config -c "$work/long.ratelimitd.yaml" >/dev/null 2>&1; then
    sts=$(sed -n 's/.*ok   StatefulSet \([^ ]*\) name is \([0-9]*\) .*/\1 (\2 characters)/p' "$work/long.val")
    pass "53-character release name: objects valid, StatefulSet $sts, servers name it, --check-config ok"
else
    failed "53-character release name"; cat "$work/long.err"; grep -v '  ok' "$work/long.val" || true
fi

echo "== checksum/config follows the config"
sum() { sed -n 's/^checksum=//p' "$work/$1.val"; }
H template rl "$chart" --namespace rl-ci -f "$ci/default-values.yaml" --set config.limits.default=11 >"$work/changed.yaml"
node "$validator" "$work/changed.yaml" >"$work/changed.val" 2>&1 || true
H template rl "$chart" --namespace rl-ci -f "$ci/default-values.yaml" >"$work/same.yaml"
node "$validator" "$work/same.yaml" >"$work/same.val" 2>&1 || true
if [[ -n $(sum default) && $(sum default) == $(sum same) && $(sum default) != $(sum changed) ]]; then
    pass "same values -> same checksum; config.limits.default 10 -> 11 -> new checksum (pods roll)"
else
    failed "checksum: default=$(sum default) same=$(sum same) changed=$(sum changed)"
fi

echo "== bad values are rejected at install time"
# reject schema|chart DESCRIPTION EXPECTED-MESSAGE-REGEX helm-args...
# schema: values.schema.json must stop helm template (= install) and helm lint --strict.
# chart: a cross-field `fail` in _helpers.tpl stops helm template/install.
reject() {
    local kind=$1 desc=$2 re=$3; shift 3
    local out rc=0
    out=$(H template rl "$chart" "$@" 2>&1) || rc=$?
    if [[ $rc -ne 0 ]] && grep -Eq "$re" <<<"$out"; then
        pass "rejected: $desc"
    else
        failed "not rejected as expected (rc=$rc): $desc"; tail -n 3 <<<"$out"
    fi
    [[ $kind == schema ]] || return 0
    rc=0
    out=$(H lint --strict "$chart" "$@" 2>&1) || rc=$?
    [[ $rc -ne 0 ]] && pass "  and helm lint --strict fails: $desc" || failed "helm lint accepted: $desc"
}
reject schema 'replicaCount: "three"' "replicaCount.*want integer" --set-string replicaCount=three
reject schema 'config.backend.on_failure: maybe' "on_failure.*(one of|enum)" --set config.backend.on_failure=maybe
reject schema 'misspelled top-level key replicaCuont' "additional propert.*replicaCuont" --set replicaCuont=3
reject schema 'misspelled config key config.backend.timeoutMS' "additional propert.*timeoutMS" --set config.backend.timeoutMS=20
reject schema 'config.listen (owned by the chart)' "additional propert.*listen" --set 'config.listen[0].port=9000'
reject schema 'config.limits.default: 0' "limits/default.*minimum" --set config.limits.default=0
reject schema 'config.backend.window_ttl_s: 2 (< 3 s)' "window_ttl_s.*minimum" --set config.backend.window_ttl_s=2
reject schema 'config.log_level: verbose' "log_level.*(one of|enum)" --set config.log_level=verbose
reject schema 'config.limits.tiers name with a space' "invalid propertyName 'bad name'" --set 'config.limits.tiers.bad\ name=3'
reject schema 'externalMemcached server "bad host"' "externalMemcached/servers" --set memcached.enabled=false --set 'externalMemcached.servers[0]=bad host'
reject schema 'tls.port 70000' "tls/port.*maximum" --set tls.port=70000
reject schema 'memcached.addressing: dns' "addressing.*(one of|enum)" --set memcached.addressing=dns
reject schema 'memcached.hashPower: 8 (memcached needs >= 12)' "hashPower" --set memcached.hashPower=8
reject schema 'memcached.requestsPerEvent: -1' "requestsPerEvent.*minimum" --set memcached.requestsPerEvent=-1
for srv in h:0 h:99999 h:08080 h:11211:0 h:11211:1001 h:11211:9999; do
    reject schema "externalMemcached server $srv (the daemon takes ports 1-65535, weights 1-1000)" "externalMemcached/servers" --set memcached.enabled=false --set "externalMemcached.servers[0]=$srv"
done
H template rl "$chart" --set memcached.enabled=false --set 'externalMemcached.servers={h:1,h:65535:1000,h}' >/dev/null 2>&1 &&
    pass "accepted: servers h:1, h:65535:1000, h" || failed "refused: servers h:1, h:65535:1000, h"
reject schema 'service.port 80 (the non-root container cannot bind it)' "service/port.*minimum" --set service.port=80
reject schema 'memcached.port 1011 (the non-root memcached container cannot bind it)' "memcached/port.*minimum" --set memcached.port=1011
reject schema 'tls.port 443 (the non-root container cannot bind it)' "tls/port.*minimum" --set tls.port=443
reject schema 'fullnameOverride of 43 characters' "fullnameOverride" --set fullnameOverride=a-fullname-override-of-forty-three-chars-xy
reject schema 'probes.readiness.path: /metrics' "readiness/path.*(one of|enum)" --set probes.readiness.path=/metrics
reject chart 'memcached off and no external servers' "enable memcached .* or list externalMemcached.servers" --set memcached.enabled=false
reject chart 'in-cluster and external memcached at once' "are exclusive" --set 'externalMemcached.servers[0]=10.0.0.1:11211'
reject chart 'backend local with an HPA' "backend.type local counts per pod" --set config.backend.type=local
reject chart 'tls on without secretName' "tls.enabled needs tls.secretName" --set tls.enabled=true
reject chart 'API key mapped to an unknown tier' "not in config.limits.tiers" --set config.limits.keys.k1=gold
reject chart 'timeout_ms 1500 with window_ttl_s 3' "timeout_ms \\(1500\\) must be at most .* = 1000 ms.*window_ttl_s to 4" --set config.backend.timeout_ms=1500
H template rl "$chart" --set config.backend.timeout_ms=1500 --set config.backend.window_ttl_s=4 >/dev/null 2>&1 &&
    pass "accepted: timeout_ms 1500 with window_ttl_s 4" || failed "refused: timeout_ms 1500 with window_ttl_s 4"
reject chart 'a tier named default' "\"default\" is the policy name" --set config.limits.tiers.default=5
reject chart 'autoscaling min > max' "maxReplicas must be >= " --set autoscaling.minReplicas=9 --set autoscaling.maxReplicas=3
reject chart 'terminationGracePeriodSeconds below the drain time' "must exceed preStopSleepSeconds" --set terminationGracePeriodSeconds=8
reject chart 'PDB minAvailable 3 = HPA minReplicas 3' "minAvailable \(3\) must be below autoscaling.minReplicas \(3\)" --set podDisruptionBudget.minAvailable=3
reject chart 'PDB minAvailable 4 = replicaCount 4 (no HPA)' "minAvailable \(4\) must be below replicaCount \(4\)" --set autoscaling.enabled=false --set replicaCount=4 --set podDisruptionBudget.minAvailable=4
reject chart 'PDB minAvailable 100%' "minAvailable 100% of autoscaling.minReplicas" --set-string podDisruptionBudget.minAvailable=100%
reject chart 'PDB minAvailable 67% of 3 pods (rounds up to 3)' "minAvailable 67% of autoscaling.minReplicas \(3\) rounds up" --set-string podDisruptionBudget.minAvailable=67%
reject chart 'PDB maxUnavailable 0' "^Error.*podDisruptionBudget.maxUnavailable must be at least 1" --set podDisruptionBudget.maxUnavailable=0
reject chart 'memcached PDB maxUnavailable 0' "memcached.podDisruptionBudget.maxUnavailable must be at least 1" --set memcached.podDisruptionBudget.maxUnavailable=0
for args in "--set podDisruptionBudget.minAvailable=2" "--set-string podDisruptionBudget.minAvailable=66%" \
    "--set podDisruptionBudget.enabled=false --set podDisruptionBudget.maxUnavailable=0"; do
    # shellcheck disable=SC2086  # word splitting of the helm arguments is intended
    H template rl "$chart" $args >/dev/null 2>&1 && pass "accepted: $args (evictions stay possible)" || failed "refused: $args"
done

echo "== the validator rejects what it must"
cat >"$work/bad.yaml" <<'EOF'
apiVersion: policy/v1beta1
kind: PodDisruptionBudget
metadata: {name: old}
spec: {maxUnavailable: 1}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec: {replicas: "three", selector: {}, template: {spec: {containers: [{name: c, image: i, ports: [{containerPort: "80"}]}]}}}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: sm}
spec: {selector: {}, endpoints: [{port: http, intreval: 15s}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: a-statefulset-name-of-fifty-three-characters-abcdefgh}
spec: {serviceName: s, selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i, args: []}]}}}
EOF
node "$validator" "$work/bad.yaml" >"$work/bad.val" 2>&1 || true
for want in 'policy/v1beta1 is removed' 'Widget w: unknown apiVersion/kind' 'Deployment d schema' 'endpoints\[\].intreval unknown' \
    'StatefulSet a-statefulset-name-of-fifty-three-characters-abcdefgh name is 53'; do
    grep -Eq "FAIL .*$want" "$work/bad.val" && pass "validator flags: $want" || { failed "validator missed: $want"; cat "$work/bad.val"; }
done

echo "== the helm test pod's script against a real ratelimitd (local store, free port)"
# The pod's shell script, run here with this machine's curl against the daemon started with
# the rendered config (listener moved to 127.0.0.1:PORT, store switched to local).
# shellcheck source=tests/deploy/lib/free-port.sh
source "$src/tests/deploy/lib/free-port.sh"
run_test_pod() {
    local name=$1 values=$2 mc_port=${3:-}
    local port
    port=$(free_port "$mc_port")
    H template rl "$chart" -f "$values" --show-only templates/tests/test-limit.yaml >"$work/$name.testpod.yaml"
    H template rl "$chart" -f "$values" >"$work/$name.testpod-release.yaml"
    node --input-type=module - "$work/$name.testpod.yaml" "$work/$name.ratelimitd.yaml" "$work/$name.local.yaml" "$port" "$work/$name.testpod" "$mc_port" "$work/$name.testpod-release.yaml" <<'JS'
import fs from 'node:fs';
import path from 'node:path';
const YAML = await import(path.join(process.env.RL_NODE_MODULES, 'yaml/dist/index.js'));
const [podFile, cfgFile, outCfg, port, outPrefix, mcPort, allFile] = process.argv.slice(2);
const pod = YAML.parse(fs.readFileSync(podFile, 'utf8'));
const c = pod.spec.containers[0];
fs.writeFileSync(`${outPrefix}.sh`, c.args[0]);
// a value from a Secret is looked up in the release's rendered Secrets, as the kubelet would
const secrets = YAML.parseAllDocuments(fs.readFileSync(allFile, 'utf8')).map((d) => d.toJS())
    .filter((o) => o?.kind === 'Secret');
const resolve = (e) => {
    const ref = e.valueFrom?.secretKeyRef;
    if (!ref) return e.value;
    const s = secrets.find((o) => o.metadata.name === ref.name);
    if (!s?.data?.[ref.key]) throw new Error(`env ${e.name}: Secret ${ref.name} key ${ref.key} is not rendered`);
    return Buffer.from(s.data[ref.key], 'base64').toString();
};
const env = Object.fromEntries(c.env.map((e) => [e.name, resolve(e)]));
env.URL = `http://127.0.0.1:${port}`;
delete env.TLS_URL;
fs.writeFileSync(`${outPrefix}.env`, Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
const cfg = YAML.parse(fs.readFileSync(cfgFile, 'utf8'));
cfg.listen = [{ address: '127.0.0.1', port: Number(port) }];
if (mcPort) cfg.backend.servers = [`127.0.0.1:${mcPort}`];
else cfg.backend = { type: 'local' };
cfg.threads = 1;
fs.writeFileSync(outCfg, YAML.stringify(cfg));
JS
    "$bin" -c "$work/$name.local.yaml" >"$work/$name.daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 1 50); do
        curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
        sleep 0.1
    done
    # shellcheck disable=SC1090  # generated above
    if (set -a && . "$work/$name.testpod.env" && HOSTNAME=ci timeout 60 sh -ec "$(cat "$work/$name.testpod.sh")") >"$work/$name.testpod.out" 2>&1; then
        pass "$name: helm test script passes against ratelimitd: $(grep -E 'PASS|want 403' "$work/$name.testpod.out" | tail -n 1)"
    else
        failed "$name: helm test script"; cat "$work/$name.testpod.out"; tail -n 5 "$work/$name.daemon.log"
    fi
    curl -s "http://127.0.0.1:$port/metrics" >"$work/$name.metrics" || true
    kill "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
    daemon_pid=""
}
run_test_pod default "$ci/default-values.yaml"
run_test_pod external-memcached "$ci/external-memcached-values.yaml"

echo "== the alert rules and the dashboard use only series the daemon exports"
# The validator parsed every rule's and panel's PromQL above and listed the ratelimitd_* names
# they use; each must be a sample name in the scrape of the daemon the helm test script just ran.
mapfile -t used < <(sed -n 's/^uses-metric=//p' "$work/external-memcached.val")
missing=()
for m in "${used[@]}"; do grep -q "^$m[{ ]" "$work/external-memcached.metrics" || missing+=("$m"); done
grep -q 'PrometheusRule' "$work/external-memcached.val" && ((${#used[@]} >= 8)) && ((${#missing[@]} == 0)) &&
    pass "external-memcached: the PrometheusRule's and dashboard's ${#used[@]} metric names are all in /metrics" ||
    failed "external-memcached: metric names not exported: ${missing[*]:-none} (used: ${used[*]:-none})"

echo "== the chart's memcached command line, run here, serves ratelimitd"
# The StatefulSet's args as rendered (port moved to a free one, bound to 127.0.0.1): memcached
# must accept them, apply them, and count for ratelimitd through the helm test script.
mc_args() { # VALUES-FILE [helm args...] -> the memcached container's args, one per line
    local values=$1; shift
    H template rl "$chart" -f "$values" "$@" --show-only templates/memcached.yaml |
        node --input-type=module -e "
import fs from 'node:fs'; import path from 'node:path';
const YAML = await import(path.join(process.env.RL_NODE_MODULES, 'yaml/dist/index.js'));
const sts = YAML.parseAllDocuments(fs.readFileSync(0, 'utf8')).map((d) => d.toJS()).find((o) => o?.kind === 'StatefulSet');
console.log(sts.spec.template.spec.containers[0].args.join('\\n'));"
}
mc_settings() { # PORT -> memcached's 'stats settings' reply (the integration tests' harness)
    python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import rlharness as h
print("\n".join(h.Memcached(port=int(sys.argv[2])).command("stats settings").splitlines()))' "$src/tests/integration" "$1"
}
mapfile -t args < <(mc_args "$ci/default-values.yaml")
mc_port=$(free_port)
for i in "${!args[@]}"; do [[ ${args[i]} == -p ]] && args[i + 1]=$mc_port; done
[[ $(id -u) == 0 ]] && args+=(-u nobody)
memcached -l 127.0.0.1 "${args[@]}" >"$work/memcached.log" 2>&1 &
mc_pid=$!
for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$mc_port") 2>/dev/null && break
    sleep 0.1
done
settings=$(mc_settings "$mc_port" || true)
kill -0 "$mc_pid" 2>/dev/null && pass "memcached starts with the rendered args: ${args[*]}" ||
    { failed "memcached rejected the rendered args: ${args[*]}"; cat "$work/memcached.log"; }
grep -qx 'STAT hashpower_init 20' <<<"$settings" && grep -qx 'STAT cas_enabled no' <<<"$settings" &&
    grep -qx 'STAT lru_maintainer_thread no' <<<"$settings" && grep -qx 'STAT reqs_per_event 1000' <<<"$settings" &&
    pass "default memcached settings: hashpower_init 20, cas_enabled no, lru_maintainer_thread no, reqs_per_event 1000" ||
    { failed "memcached settings"; grep -E 'hashpower|cas_enabled|lru_maintainer|reqs_per_event' <<<"$settings"; }
# DEPLOY.md: with no LRU maintainer, new counters take the memory of expired ones (memcached's
# `reclaimed`), not the LRU crawler; 50 counters with ratelimitd's 3 s TTL, then 50 new ones
mc_reuse() { # PORT -> "reclaimed crawler_reclaimed curr_items" after the second 50
    python3 -c 'import sys, time; sys.path.insert(0, sys.argv[1]); import rlharness as h
m = h.Memcached(port=int(sys.argv[2]))
new = lambda tag: m.command("".join("ma rl:reuse-%s-%d N3 J1 v\r\n" % (tag, i) for i in range(50)) + "mn")
new("a"); time.sleep(4.5); new("b"); s = m.stats()
print(s["reclaimed"], s["crawler_reclaimed"], s["curr_items"])' "$src/tests/integration" "$1"
}
read -r reclaimed crawled items < <(mc_reuse "$mc_port")
[[ $reclaimed -ge 50 && $crawled -eq 0 && $items -eq 50 ]] &&
    pass "expired counters are reused by new ones: reclaimed $reclaimed, crawler_reclaimed $crawled, curr_items $items" ||
    failed "counter reuse: reclaimed $reclaimed, crawler_reclaimed $crawled, curr_items $items (want >= 50, 0, 50)"
# DEPLOY.md: a batch as deep as ratelimitd's under HTTP/2 load (~90 increments in one write) is
# served in one pass, without yielding (memcached's default -R 20 yields 5 times on this one)
mc_yields() { # PORT -> conn_yields after one write of 100 increments
    python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import rlharness as h
m = h.Memcached(port=int(sys.argv[2]))
reply = m.command("".join("ma rl:batch-%d N3 J1 v\r\n" % i for i in range(100)) + "mn")
assert reply.count("VA 1") == 100, reply[:200]
print(m.stats()["conn_yields"])' "$src/tests/integration" "$1"
}
yields=$(mc_yields "$mc_port" || echo error)
[[ $yields == 0 ]] && pass "a batch of 100 increments is served without yielding: conn_yields $yields" ||
    failed "a batch of 100 increments: conn_yields $yields (want 0)"
cp "$work/default.ratelimitd.yaml" "$work/default-memcached.ratelimitd.yaml"
run_test_pod default-memcached "$ci/default-values.yaml" "$mc_port"
kill "$mc_pid" 2>/dev/null || true
wait "$mc_pid" 2>/dev/null || true
mc_pid=""
# scripts/run and bench/run start memcached with conf/memcached.options: the chart's defaults
read -ra deployed < <(grep -v -e '^#' -e '^[[:space:]]*$' "$src/conf/memcached.options")
rendered=$(mc_args "$ci/default-values.yaml" | tr '\n' ' ')
[[ ${#deployed[@]} -gt 0 && $rendered == *" ${deployed[*]} " ]] &&
    pass "the chart renders conf/memcached.options (${deployed[*]}): $rendered" ||
    failed "conf/memcached.options (${deployed[*]}) differs from the chart's memcached args: $rendered"
off=$(mc_args "$ci/default-values.yaml" --set memcached.hashPower=0 --set memcached.cas=true \
    --set memcached.requestsPerEvent=0 | tr '\n' ' ')
! grep -q 'hashpower' <<<"$off" && ! grep -qw -- '-C' <<<"$off" && ! grep -qw -- '-R' <<<"$off" &&
    pass "hashPower 0, cas true and requestsPerEvent 0 leave memcached's defaults: $off" ||
    failed "hashPower 0 / cas true / requestsPerEvent 0 still render: $off"

echo "test_helm: $failures failure(s), $((SECONDS - start))s"
[[ $failures -eq 0 ]]
