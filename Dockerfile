# ratelimitd container image.
#   docker build -t ratelimitd .        (or: podman build -t ratelimitd .)
#   docker run --rm -p 8080:8080 ratelimitd
# The built-in config listens on 0.0.0.0:8080 with the local in-process store, so the image
# runs alone (correct for ONE instance only). For several replicas mount a config with
# `backend: {type: memcached, ...}` over /etc/ratelimitd/ratelimitd.yaml (the Helm chart does).
# The process writes nothing to disk (logs go to stderr), so it runs with a read-only root
# filesystem, as the non-root numeric user 10001, with every capability dropped.

########## build ##########
FROM debian:bookworm AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config \
        libh2o-evloop-dev libmemcached-dev libyaml-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY include ./include
COPY src ./src
# The test suite (cmocka, python) is not part of the image.
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DRL_WERROR=OFF -DRL_TESTS=OFF \
 && cmake --build build -j"$(nproc)" --target ratelimitd \
 && strip --strip-unneeded build/ratelimitd \
 && build/ratelimitd --version

########## runtime ##########
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
# Only the shared libraries `ldd ratelimitd` lists (their packages found with dpkg -S);
# libc, libgcc-s1, libstdc++6 and zlib1g come with the base image or as their dependencies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        libh2o-evloop0.13 libmemcached11 libhashkit2 libyaml-0-2 libssl3 libsasl2-2 libwslay1 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old \
           /var/log/apt /var/log/dpkg.log \
 && groupadd --gid 10001 ratelimitd \
 && useradd --uid 10001 --gid 10001 --no-create-home --no-log-init --home-dir /nonexistent \
            --shell /usr/sbin/nologin ratelimitd \
 && mkdir -p /etc/ratelimitd \
 && printf '%s\n' \
        '# Default config of the ratelimitd image: one instance, local in-process store.' \
        '# Mount your own file here for memcached (see the Helm chart).' \
        'listen:' \
        '  - address: 0.0.0.0' \
        '    port: 8080' \
        'threads: 0' \
        'api_key_header: X-API-Key' \
        'limits:' \
        '  default: 10' \
        '  unknown_keys: allow' \
        'log_level: info' \
        'shutdown_grace_ms: 5000' \
        > /etc/ratelimitd/ratelimitd.yaml \
 && chmod 0644 /etc/ratelimitd/ratelimitd.yaml
COPY --from=build /src/build/ratelimitd /usr/local/bin/ratelimitd
RUN /usr/local/bin/ratelimitd --check-config -c /etc/ratelimitd/ratelimitd.yaml

USER 10001:10001
# 8080: cleartext HTTP/1.1 + h2c, /limit /healthz /readyz /metrics; 8443: TLS (h2 via ALPN).
EXPOSE 8080 8443
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ratelimitd"]
CMD ["-c", "/etc/ratelimitd/ratelimitd.yaml"]
