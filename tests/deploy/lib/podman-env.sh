# shellcheck shell=bash
# Sourced by tests/deploy/test_image.sh: a private, daemonless podman setup under the tools
# cache, so the tests never touch the machine's own containers or images.
#   $RL_PODMAN_DIR/containers.conf   runc (crun fails on mixed cgroups), ulimits within the
#                                    sandbox's hard limits, host networking
#   $RL_PODMAN_DIR/storage.conf      overlay store in $RL_PODMAN_DIR/{root,runroot}
# and the base image: debootstrap --variant=minbase bookworm from the mirror apt already uses,
# cached as a tarball keyed by date, imported as docker.io/library/debian:bookworm and
# :bookworm-slim so the Dockerfile's unchanged FROM lines resolve with --pull=never.

RL_TOOLS_DIR=${RL_TOOLS_DIR:-$HOME/.cache/ratelimitd-tools}
RL_PODMAN_DIR=$RL_TOOLS_DIR/podman
RL_IMAGES_DIR=$RL_TOOLS_DIR/images

podman_env_setup() {
    mkdir -p "$RL_PODMAN_DIR/root" "$RL_PODMAN_DIR/runroot" "$RL_PODMAN_DIR/tmp" "$RL_IMAGES_DIR"
    cat >"$RL_PODMAN_DIR/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:20000", "nproc=4096:4096"]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
image_copy_tmp_dir = "$RL_PODMAN_DIR/tmp"
EOF
    cat >"$RL_PODMAN_DIR/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$RL_PODMAN_DIR/root"
runroot = "$RL_PODMAN_DIR/runroot"
EOF
    export CONTAINERS_CONF=$RL_PODMAN_DIR/containers.conf
    export CONTAINERS_STORAGE_CONF=$RL_PODMAN_DIR/storage.conf
    export TMPDIR=$RL_PODMAN_DIR/tmp
}

# The mirror apt on this machine is configured with (deb822 or one-line sources).
apt_debian_mirror() {
    local m
    m=$(grep -rhoE '^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
        grep -oE 'https?://[^[:space:]]+/debian/?' | grep -v -- '-security' | head -n1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

# Imports the base image unless today's is already in the private store.
podman_base_image() {
    local day tar stamp mirror dir
    day=$(date -u +%Y%m%d)
    tar=$RL_IMAGES_DIR/debian-bookworm-minbase-$day.tar
    stamp=$RL_PODMAN_DIR/base-image.stamp
    if [[ -f $stamp && $(cat "$stamp") == "$tar" && -f $tar ]] &&
        podman image exists docker.io/library/debian:bookworm &&
        podman image exists docker.io/library/debian:bookworm-slim; then
        echo "base image: cached ($(basename "$tar"))"
        return 0
    fi
    if [[ ! -f $tar ]]; then
        mirror=$(apt_debian_mirror)
        dir=$(mktemp -d "$RL_IMAGES_DIR/.rootfs.XXXXXX")
        echo "base image: debootstrap --variant=minbase bookworm from $mirror"
        if ! timeout 600 debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.log" 2>&1; then
            tail -n 20 "$dir.log"
            rm -rf "$dir" "$dir.log"
            return 1
        fi
        # Made like the official debian:bookworm-slim: no apt caches or lists, no docs, man
        # pages or locales (and dpkg told not to install them), a policy-rc.d so package
        # scripts never start services.
        rm -rf "$dir"/var/cache/apt/* "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log \
            "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/*
        find "$dir/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
        printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
            'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
            'path-exclude /usr/share/locale/*' >"$dir/etc/dpkg/dpkg.cfg.d/docker-slim"
        printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
        chmod 0755 "$dir/usr/sbin/policy-rc.d"
        tar -C "$dir" --numeric-owner -cf "$tar.part" .
        mv -f "$tar.part" "$tar"
        rm -rf "$dir" "$dir.log"
        find "$RL_IMAGES_DIR" -maxdepth 1 -name 'debian-bookworm-minbase-*.tar' ! -name "$(basename "$tar")" -delete
    fi
    echo "base image: podman import $(basename "$tar")"
    podman import --change 'CMD ["bash"]' "$tar" docker.io/library/debian:bookworm >/dev/null
    podman tag docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim
    echo "$tar" >"$stamp"
}

# Empties and removes the private store (overlay mounts must go before the files can).
podman_env_destroy() {
    podman system reset --force >/dev/null 2>&1 || true
    rm -rf "$RL_PODMAN_DIR"
}
