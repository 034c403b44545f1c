#!/usr/bin/env bash
# shellcheck disable=SC2015  # pass() and failed() always succeed, so A && pass || failed is if-then-else
# Offline Terraform checks (ctest label deploy):
#   1. terraform fmt -check -recursive terraform/
#   2. modules/ratelimitd-values (provider-free): init -backend=false, validate, terraform test
#      (plans with assertions, expect_failures on bad inputs and on check blocks)
#   3. the values that module produces are accepted by the Helm chart: a throw-away root module
#      calls it, `terraform apply` (outputs only, local state in a temp dir), then
#      `helm template -f values -f secret_values` + the manifest validator + --check-config.
#   4. modules/ratelimitd and examples/aws-eks-elasticache (they need the aws/helm/kubernetes
#      provider binaries, which cannot be downloaded here): terraform fmt plus a static wiring
#      check (tests/deploy/lib/tf-wiring.py). NOT init/validate/plan.
set -euo pipefail
start=$SECONDS
# absolute: the script changes directory below
src=$(cd "${RL_SOURCE_DIR:-$(dirname "$0")/../..}" && pwd)
bin=$(realpath -m "${RL_BINARY:-$src/build/ratelimitd}")
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
if ! command -v terraform >/dev/null; then
    echo "SKIPPED: terraform is not installed (Debian has no package; HashiCorp's archive is not reachable here)"
    # Machines that run CI have it installed, so there a missing terraform is a broken machine,
    # not a reason to report the deploy checks as passed.
    if [[ ${CI:-} == true && ${RL_TERRAFORM_ALLOW_SKIP:-0} != 1 ]]; then
        echo "CI=true: terraform is expected here, so this is a failure (RL_TERRAFORM_ALLOW_SKIP=1 to skip)"
        exit 1
    fi
    exit 77
fi
# not `| head -n 1`: under pipefail, head closing the pipe early can fail the script with SIGPIPE
tf_version=$(terraform version)
echo "${tf_version%%$'\n'*}"

work=$(mktemp -d /tmp/rl-test-tf.XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
pass() { echo "  ok   $*"; }
failed() { echo "  FAIL $*"; failures=$((failures + 1)); }

if terraform fmt -check -recursive -diff "$src/terraform" >"$work/fmt.out" 2>&1; then
    pass "terraform fmt -check -recursive terraform/"
else
    failed "terraform fmt"; cat "$work/fmt.out"
fi

# Modules that need providers: a static wiring check instead of `terraform validate`.
if python3 "$src/tests/deploy/lib/tf-wiring.py" "$src/terraform/modules/ratelimitd-values" "$src/terraform/modules/ratelimitd" \
    "$src/terraform/examples/aws-eks-elasticache" >"$work/wiring.out" 2>&1; then
    pass "static wiring: module inputs = declared variables (required ones passed), module outputs exist, every variable typed, described, used"
else
    failed "static wiring"; grep FAIL "$work/wiring.out"
fi
cp -r "$src/terraform" "$work/wiring-bad"
sed -i 's/^  network_policy  *= false/  network_policy = false\n  no_such_input = 1/' "$work/wiring-bad/examples/aws-eks-elasticache/main.tf"
bad_out=$(python3 "$src/tests/deploy/lib/tf-wiring.py" "$work/wiring-bad/examples/aws-eks-elasticache" 2>&1 || true)
if grep -q 'passes no_such_input' <<<"$bad_out"; then
    pass "the wiring check flags an unknown module input (self-test)"
else
    failed "the wiring check misses an unknown module input"
fi
rm -rf "$work/wiring-bad"

# Work on a copy so .terraform/ and lock files never land in the source tree.
cp -r "$src/terraform/modules/ratelimitd-values" "$work/values"
cd "$work/values"
if timeout 120 terraform init -backend=false -input=false -no-color >"$work/init.out" 2>&1; then
    pass "ratelimitd-values: terraform init -backend=false"
else
    failed "init"; cat "$work/init.out"
fi
if timeout 120 terraform validate -no-color >"$work/validate.out" 2>&1; then
    pass "ratelimitd-values: terraform validate"
else
    failed "validate"; cat "$work/validate.out"
fi
if timeout 300 terraform test -no-color >"$work/test.out" 2>&1; then
    pass "ratelimitd-values: terraform test ($(grep -c '^ *run "[a-z0-9_]*"\.\.\. pass' "$work/test.out") runs pass: $(grep -o 'run "[a-z0-9_]*"' "$work/test.out" | tr -d '"' | sed 's/run //' | tr '\n' ' '))"
else
    failed "terraform test"; cat "$work/test.out"
fi

# 3. Terraform values -> chart.
mkdir -p "$work/root"
# v: the longest release name that needs no truncation (31 characters + -ratelimitd = 42, so
# the StatefulSet is 52), non-default domain and ports; ext: external memcached, fixed
# replicas; exs: existingConfigSecret, no key_hash_secret at all.
cat >"$work/root/main.tf" <<TF
module "v" {
  source                    = "$work/values"
  release_name              = "a-release-name-of-31-characters"
  namespace                 = "gateway"
  key_hash_secret           = "tf-test-secret-0123456789"
  tiers                     = { free = 10, premium = 100 }
  api_keys                  = { "k-1" = "premium" }
  shutdown_grace_ms         = 8000
  cluster_domain            = "corp.example"
  service_port              = 9080
  in_cluster_memcached_port = 11311
  listen_addresses          = ["0.0.0.0", "::"]
}
module "ext" {
  source            = "$work/values"
  key_hash_secret   = "tf-test-secret-0123456789"
  replicas          = { min = 2, max = 2 }
  memcached_servers = ["a.cache.amazonaws.com:11211", "b.cache.amazonaws.com:11211"]
}
module "exs" {
  source                 = "$work/values"
  existing_config_secret = "tf-ratelimitd-config"
}
output "values" { value = module.v.values_yaml }
output "secret" {
  value     = module.v.secret_values_yaml
  sensitive = true
}
output "ext_values" { value = module.ext.values_yaml }
output "ext_secret" {
  value     = module.ext.secret_values_yaml
  sensitive = true
}
output "exs_values" { value = module.exs.values_yaml }
output "exs_secret" {
  value     = module.exs.secret_values_yaml
  sensitive = true
}
output "tgps" { value = module.v.termination_grace_period_seconds }
output "servers" { value = join("\n", module.v.memcached_servers) }
output "service" { value = module.v.service }
TF
cd "$work/root"
if timeout 120 terraform init -backend=false -input=false -no-color >"$work/rinit.out" 2>&1 &&
    timeout 120 terraform apply -auto-approve -input=false -no-color -state="$work/root.tfstate" >"$work/apply.out" 2>&1; then
    for o in values secret ext_values ext_secret exs_values exs_secret tgps servers service; do
        terraform output -state="$work/root.tfstate" -raw $o >"$work/$o.yaml"
    done
    pass "values module applied in a provider-free root (outputs only)"
    tools=$(timeout 300 "$src/scripts/deploy-tools" helm node | tail -n 1)
    export RL_NODE_MODULES=$tools/node/node_modules
    export HELM_CACHE_HOME=$work/hc HELM_CONFIG_HOME=$work/hcf HELM_DATA_HOME=$work/hd
    for set in "values secret a-release-name-of-31-characters" "ext_values ext_secret ratelimitd" "exs_values exs_secret ratelimitd"; do
        read -r v s release <<<"$set"
        expect=(--expect-netpol present)
        [[ $v == ext_values ]] && expect=(--expect-hpa absent --expect-netpol absent)
        [[ $v == exs_values ]] && expect=(--expect-netpol present --expect-config external --config-secret tf-ratelimitd-config --expect-readiness /healthz)
        if timeout 60 "$tools/bin/helm" template "$release" "$src/helm/ratelimitd" --namespace gateway -f "$work/$v.yaml" -f "$work/$s.yaml" >"$work/$v.rendered" 2>"$work/$v.err" &&
            node "$src/tests/deploy/lib/validate-manifests.mjs" "$work/$v.rendered" --config-out "$work/$v.cfg" \
                "${expect[@]}" >"$work/$v.val" 2>&1 &&
            { [[ $v == exs_values ]] || [[ $("$bin" --check-config -c "$work/$v.cfg" 2>&1) == ok ]]; }; then
            pass "$v: chart accepts the Terraform values (schema, manifests$([[ $v == exs_values ]] && echo ", the existing Secret mounted" || echo ", --check-config"))"
        else
            failed "$v: chart rejected the Terraform values"; cat "$work/$v.err"; grep -v '  ok' "$work/$v.val" || true
        fi
    done
    grep -q 'key_hash_secret' "$work/secret.yaml" && ! grep -q 'key_hash_secret\|keys' "$work/exs_secret.yaml" &&
        pass "existing_config_secret: no key_hash_secret or API keys in the secret values ($(cat "$work/exs_secret.yaml")), so none in the state" ||
        failed "existing_config_secret: secret values '$(cat "$work/exs_secret.yaml")'"
    # The memcached_servers output (what the example prints) = the servers the chart renders.
    rendered=$(node --input-type=module -e '
        const YAML = await import(process.env.RL_NODE_MODULES + "/yaml/dist/index.js");
        const fs = await import("node:fs");
        console.log(YAML.parse(fs.readFileSync(process.argv[1], "utf8")).backend.servers.join("\n"));' "$work/values.cfg" 2>&1 || true)
    [[ -n $rendered && $rendered == "$(cat "$work/servers.yaml")" ]] &&
        pass "memcached_servers output = the servers in the chart's rendered config: $(head -n 1 <<<"$rendered") ... ($(wc -l <<<"$rendered"))" ||
        failed "memcached_servers: terraform '$(cat "$work/servers.yaml")' vs chart '$rendered'"
    # The service output (the example's ratelimitd_endpoint) = the address the chart's own helm
    # test pod uses (Service name, namespace, clusterDomain, service.port).
    url=$("$tools/bin/helm" template a-release-name-of-31-characters "$src/helm/ratelimitd" --namespace gateway -f "$work/values.yaml" \
        -f "$work/secret.yaml" --show-only templates/tests/test-limit.yaml 2>&1 | grep -A1 'name: URL$' | sed -n 's/.*value: "http:\/\/\(.*\)"/\1/p')
    [[ -n $url && $url == "$(cat "$work/service.yaml")" ]] &&
        pass "service output = the chart's Service address ($url)" ||
        failed "service: terraform '$(cat "$work/service.yaml")' vs chart '$url'"
    [[ $(grep -c "address: '::'" "$work/values.cfg") == 2 && $(grep -c 'port: 9080' "$work/values.cfg") == 2 &&
        $(grep -c 'role: admin' "$work/values.cfg") == 2 ]] &&
        pass "listen_addresses: the chart's config listens on 0.0.0.0 and :: at service_port and admin.port" ||
        failed "listen_addresses: $(grep -A1 'address' "$work/values.cfg" | tr '\n' ' ')"
    want=$(cat "$work/tgps.yaml")
    got=$(sed -n 's/.*ok   terminationGracePeriodSeconds \([0-9]*\) .*/\1/p' "$work/values.val")
    [[ $want == "$got" ]] && pass "termination_grace_period_seconds output ($want) = chart's ($got)" ||
        failed "tgps: terraform $want, chart $got"
else
    failed "apply of the values module"; cat "$work/rinit.out" "$work/apply.out"
fi

echo "NOT validated offline: terraform/modules/ratelimitd and terraform/examples/aws-eks-elasticache get fmt + static wiring only (init/validate/plan need the aws/helm/kubernetes providers)."
echo "test_terraform: $failures failure(s), $((SECONDS - start))s"
[[ $failures -eq 0 ]]
