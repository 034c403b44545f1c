#!/usr/bin/env bash
# shellcheck disable=SC2015  # ok() and bad() always succeed, so A && ok || bad is if-then-else
# deploy.test_image: builds the Dockerfile for real with a daemonless podman (private store
# under the tools cache, base image debootstrapped from the mirror apt uses) and runs it:
#   - image metadata: numeric non-root USER, STOPSIGNAL SIGTERM, EXPOSE 8080 8443, size printed
#   - the image's built-in config passes --check-config inside the image; no compiler in it
#   - the container, read-only root fs, all capabilities dropped, no-new-privileges, against a
#     memcached this script starts on a free 127.0.0.1 port: /healthz 200, /readyz 200,
#     /limit over h2c (prior knowledge) 200 then 429 with Retry-After, /metrics, uid not 0
#   - SIGTERM (podman stop) ends it with exit code 0 within the grace period
# When podman cannot run on this machine: prints a loud SKIPPED line and exits 77 (ctest
# SKIP_RETURN_CODE). With CI=true it fails instead, unless RL_IMAGE_ALLOW_SKIP=1.
set -euo pipefail

src=${RL_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# shellcheck source=tests/deploy/lib/podman-env.sh
source "$src/tests/deploy/lib/podman-env.sh"

image=localhost/ratelimitd:ctest
name=ratelimitd-ctest-$$
t0=$(date +%s)
failures=0
work=$(mktemp -d "${TMPDIR:-/tmp}/rl-image.XXXXXX")
mc_pid=""

ok() { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; failures=$((failures + 1)); }
elapsed() { echo "$(($(date +%s) - t0))s"; }

skip() {
    echo
    echo "################################################################################"
    echo "### SKIPPED deploy.test_image: $*"
    echo "### The container image was NOT built or run. Install podman, runc, uidmap and"
    echo "### debootstrap (scripts/deploy-tools podman) and run this test as root."
    echo "################################################################################"
    if [[ ${CI:-} == true && ${RL_IMAGE_ALLOW_SKIP:-0} != 1 ]]; then
        echo "CI=true: podman is expected to work here, so this is a failure (RL_IMAGE_ALLOW_SKIP=1 to skip)"
        exit 1
    fi
    exit 77
}

cleanup() {
    set +e
    if [[ -n ${PODMAN_READY:-} ]]; then
        podman rm -f -t 0 "$name" >/dev/null 2>&1
    fi
    if [[ -n $mc_pid ]]; then
        kill "$mc_pid" 2>/dev/null
        wait "$mc_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=tests/deploy/lib/free-port.sh
source "$src/tests/deploy/lib/free-port.sh"

# ---- is podman usable here? ------------------------------------------------------------
if [[ $(id -u) -ne 0 ]]; then
    skip "needs root (the test runs rootful podman with runc and debootstrap)"
fi
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    echo "podman/runc/debootstrap missing: scripts/deploy-tools podman"
    timeout 600 "$src/scripts/deploy-tools" podman >/dev/null || skip "could not install podman, runc, debootstrap"
fi
command -v memcached >/dev/null || skip "memcached is not installed (scripts/deps run)"
command -v curl >/dev/null || skip "curl is not installed"

podman_env_setup
if ! podman_base_image; then
    skip "could not create the debian:bookworm base image (debootstrap from $(apt_debian_mirror))"
fi
PODMAN_READY=1
if ! probe=$(timeout 120 podman run --rm --pull=never --network=host docker.io/library/debian:bookworm-slim \
    sh -c 'echo container-ok' 2>&1) || [[ $probe != *container-ok* ]]; then
    echo "$probe" | tail -n 10
    skip "podman cannot run a container here"
fi
ok "podman runs containers (runc, private store $RL_PODMAN_DIR) [$(elapsed)]"

# ---- build ---------------------------------------------------------------------------
echo "building $image from $src/Dockerfile (layer cache in the private store)"
if ! timeout 900 podman build --isolation=chroot --network=host --pull=never --layers \
    -t "$image" -f "$src/Dockerfile" "$src" >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log"
    echo "FAIL - podman build"
    exit 1
fi
ok "podman build --isolation=chroot --pull=never ($(grep -c -- '--> Using cache' "$work/build.log" || true) cached steps) [$(elapsed)]"

user=$(podman image inspect "$image" --format '{{.Config.User}}')
if [[ $user =~ ^[0-9]+(:[0-9]+)?$ && ${user%%:*} -ne 0 ]]; then
    ok "image USER is numeric and not root: $user (Kubernetes runAsNonRoot can verify it)"
else
    bad "image USER must be a numeric non-zero uid, got '$user'"
fi
stopsig=$(podman image inspect "$image" --format '{{.Config.StopSignal}}')
[[ $stopsig == SIGTERM ]] && ok "STOPSIGNAL SIGTERM" || bad "STOPSIGNAL is '$stopsig'"
ports=$(podman image inspect "$image" --format '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}')
[[ $ports == *8080/tcp* && $ports == *8443/tcp* ]] && ok "EXPOSE $ports" || bad "EXPOSE lists '$ports'"
size=$(podman image inspect "$image" --format '{{.Size}}')
base_size=$(podman image inspect docker.io/library/debian:bookworm-slim --format '{{.Size}}')
echo "image size: $((size / 1000000)) MB ($((size - base_size)) bytes over the debian:bookworm-slim base of $((base_size / 1000000)) MB)"
if ((size - base_size > 30000000)); then
    bad "the runtime stage adds more than 30 MB to the base image: build tools leaked into it?"
fi
if out=$(podman run --rm --pull=never --network=host "$image" --check-config -c /etc/ratelimitd/ratelimitd.yaml 2>&1) &&
    [[ $out == ok ]]; then
    ok "built-in /etc/ratelimitd/ratelimitd.yaml passes --check-config in the image"
else
    bad "built-in config: $out"
fi
if podman run --rm --pull=never --network=host --entrypoint sh "$image" -c \
    'for t in gcc cc make cmake; do command -v $t && exit 1; done; exit 0' >/dev/null 2>&1; then
    ok "no compiler or build tool in the runtime image"
else
    bad "build tools found in the runtime image"
fi

# ---- run against a real memcached ------------------------------------------------------
mc_port=$(free_port)
memcached -l 127.0.0.1 -p "$mc_port" -U 0 -m 16 -u nobody >"$work/memcached.log" 2>&1 &
mc_pid=$!
http_port=$(free_port "$mc_port")
mkdir -p "$work/etc"
cat >"$work/etc/ratelimitd.yaml" <<EOF
listen:
  - address: 127.0.0.1
    port: $http_port
threads: 1
api_key_header: X-API-Key
limits:
  default: 1
  unknown_keys: allow
backend:
  type: memcached
  servers: ["127.0.0.1:$mc_port"]
  timeout_ms: 200
  on_failure: closed
  key_prefix: "rlct:"
  key_hash_secret: "ctest-image"
shutdown_grace_ms: 2000
EOF
chmod 0755 "$work/etc"
chmod 0644 "$work/etc/ratelimitd.yaml"
podman run -d --name "$name" --pull=never --network=host --read-only --cap-drop=ALL \
    --security-opt=no-new-privileges --ulimit nofile=1024:20000 --ulimit nproc=4096:4096 \
    -v "$work/etc/ratelimitd.yaml:/etc/ratelimitd/ratelimitd.yaml:ro" "$image" >/dev/null
base=http://127.0.0.1:$http_port
code=000
for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$base/healthz" || true)
    [[ $code == 200 ]] && break
    sleep 0.1
done
if [[ $code == 200 ]]; then
    ok "container started: GET /healthz 200 [$(elapsed)]"
else
    bad "GET /healthz: $code"
    podman logs "$name" 2>&1 | tail -n 20
    exit 1
fi
code=000
for _ in $(seq 1 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$base/readyz" || true)
    [[ $code == 200 ]] && break
    sleep 0.1
done
[[ $code == 200 ]] && ok "GET /readyz 200 (memcached 127.0.0.1:$mc_port reachable from the container)" ||
    bad "GET /readyz: $code"

# Two h2c requests within one second: 200 then 429. A window boundary between them gives
# 200 200, so retry with a fresh key (at most 3 times). (Two curl runs: curl 7.88 loses the
# second request when it reuses an h2c prior-knowledge connection.)
verdict=""
for attempt in 1 2 3; do
    # Start early in a second so both requests land in the same window.
    python3 -c 'import time; f=time.time()%1; time.sleep(0 if f<0.05 else 1.02-f)'
    verdict=""
    for _ in 1 2; do
        verdict+=$(curl -s --http2-prior-knowledge --max-time 5 -H "X-API-Key: ctest-$$-$attempt" \
            -o /dev/null -w '%{http_code}/%{http_version} ' "$base/limit" || true)
    done
    [[ $verdict == "200/2 429/2 " ]] && break
done
if [[ $verdict == "200/2 429/2 " ]]; then
    ok "GET /limit over h2c (HTTP/2 prior knowledge), limit 1/s: 200 then 429"
else
    bad "GET /limit over h2c: expected '200/2 429/2', got '$verdict'"
fi
headers=$(curl -s --http2-prior-knowledge --max-time 5 -D - -o /dev/null -H "X-API-Key: ctest-$$-$attempt" "$base/limit" || true)
if grep -q '^HTTP/2 429' <<<"$headers" && grep -qi '^retry-after: [1-9]' <<<"$headers"; then
    ok "the 429 carries Retry-After"
elif grep -q '^HTTP/2 200' <<<"$headers"; then
    ok "(Retry-After not checked: the window turned)"
else
    bad "429 without Retry-After: $(tr '\r\n' '  ' <<<"$headers")"
fi
# read whole before matching: under pipefail, grep -q leaving early fails curl's write (SIGPIPE)
metrics=$(curl -s --max-time 5 "$base/metrics" || true)
if grep -q '^ratelimitd_requests_total' <<<"$metrics"; then
    ok "GET /metrics serves ratelimitd_requests_total"
else
    bad "GET /metrics has no ratelimitd_requests_total"
fi
# The daemon, not root, must be able to open its stderr pipe again without blocking (src/log.c):
# otherwise its event-loop threads wait for the log reader, and it says so at start-up.
logs=$(podman logs "$name" 2>&1 || true)
if ! grep -q " info main: ratelimitd .* started: " <<<"$logs"; then
    bad "no start-up line in podman logs, so no warning could be seen either: $(tail -n 3 <<<"$logs")"
elif grep -q "cannot be opened non-blocking" <<<"$logs"; then
    bad "the daemon cannot write its log without blocking: $(grep "cannot be opened" <<<"$logs" | head -n 1)"
else
    ok "stderr reopened non-blocking for the event-loop threads (start-up line, no warning, in podman logs)"
fi
pid=$(podman inspect "$name" --format '{{.State.Pid}}')
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo "?")
[[ $uid =~ ^[0-9]+$ && $uid -ne 0 ]] && ok "the daemon runs as uid $uid, not root" || bad "daemon uid is '$uid'"
[[ $(podman inspect "$name" --format '{{.HostConfig.ReadonlyRootfs}}') == true ]] &&
    ok "ran with a read-only root filesystem" || bad "root filesystem was not read-only"

stop_start=$(date +%s%N)
podman stop -t 15 "$name" >/dev/null
stop_ms=$((($(date +%s%N) - stop_start) / 1000000))
exit_code=$(podman inspect "$name" --format '{{.State.ExitCode}}')
if [[ $exit_code == 0 ]]; then
    ok "SIGTERM (podman stop): exit code 0 after ${stop_ms} ms"
else
    bad "after SIGTERM the exit code is $exit_code (${stop_ms} ms)"
    podman logs "$name" 2>&1 | tail -n 20
fi

# Keep the private store bounded: images untouched for a week go.
podman image prune -f --filter until=168h >/dev/null 2>&1 || true

echo "deploy.test_image: $failures failure(s) [$(elapsed)]"
[[ $failures -eq 0 ]]
