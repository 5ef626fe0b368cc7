# syntax=docker/dockerfile:1
#
# The heartsync server image: the `heartsync` binary and the built page
# (dist/) on a slim Debian, as a non-root user, ready for a read-only root
# filesystem (the only writable path is the /data volume).
#
#   docker build -t heartsync .
#   docker run --rm -p 8080:8080 -v heartsync-data:/data --read-only heartsync
#
# Linted with hadolint in `cargo xtask ci` (deploy/README.md, "Checks").

# --- build: the same command CI runs, so what CI builds is what ships. ---
# The Rust and Debian releases match the ones CI builds and tests with.
FROM rust:1.95-bookworm AS build

# npm brings binaryen's wasm-opt (`cargo xtask build` installs it with npm).
# Debian's packages are not version-pinned: the release is pinned by the
# base image, and Debian only ships security fixes within it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*

# `cargo xtask build` installs trunk and wasm-bindgen with `cargo install`
# (minutes of compiling); putting them in a cache mount keeps them across
# builds whose sources changed, as the registry and target caches do.
ENV CARGO_INSTALL_ROOT=/opt/tools \
    PATH=/opt/tools/bin:$PATH

WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/opt/tools \
    --mount=type=cache,target=/root/.cache/heartsync-tools \
    --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo xtask build \
    && mkdir -p /out \
    && cp target/release/heartsync /out/heartsync \
    && cp -r dist /out/dist

# --- runtime: only the binary and the page. ---
FROM debian:bookworm-slim

# A fixed numeric user, so Kubernetes' runAsNonRoot can check it, and the
# one writable folder it owns: /data (the love store, SQLite).
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin heartsync \
    && mkdir /data \
    && chown heartsync:heartsync /data

COPY --from=build /out/heartsync /usr/local/bin/heartsync
COPY --from=build /out/dist /usr/share/heartsync/dist

# Every flag has an environment variable (README.md, "Configuration");
# these are the container's defaults, and the rest are the server's.
ENV HEARTSYNC_ADDR=0.0.0.0:8080 \
    HEARTSYNC_DATA_DIR=/data \
    HEARTSYNC_STATIC_DIR=/usr/share/heartsync/dist \
    HEARTSYNC_LOG_FORMAT=json

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080

# SIGTERM drains: readiness goes 503, WebSockets close (1001) over --drain.
STOPSIGNAL SIGTERM

# No shell or curl in the image: the binary checks itself, GET /livez on the
# port of HEARTSYNC_ADDR (exit 0 when it answers 200, 1 otherwise).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["heartsync", "healthcheck"]

ENTRYPOINT ["heartsync"]
