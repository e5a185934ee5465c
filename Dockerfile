# syntax=docker/dockerfile:1
#
# keytrap container image: one static-ish binary on a distroless runtime.
#
#   docker build -t keytrap:dev .
#   docker run --rm keytrap:dev --help
#
# The builder runs the same command as CI and docs/deployment.md
# (`cargo build --release -p keytrap --locked`; charts/check.py checks they agree), so the
# image carries the binary the tests exercised. Migrations need no copy: both stores embed
# them at compile time with `sqlx::migrate!("../../migrations/...")`, which is why
# migrations/ is in the build context and not in the runtime image.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
# Only what the workspace needs to build (see .dockerignore).
COPY Cargo.toml Cargo.lock ./
COPY services ./services
COPY sdk ./sdk
COPY migrations ./migrations
# Cache mounts keep the registry and target directory between builds; the binary is copied
# out of the mount in the same step because mounts are not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p keytrap --locked \
    && install -D -m 0755 target/release/keytrap /out/keytrap

# Debian 12 distroless with glibc and libgcc (the builder is bookworm too, so the glibc
# versions agree); no shell, no package manager. The :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="keytrap" \
      org.opencontainers.image.description="Canary exchange API keys and a trap that records their use" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/keytrap /usr/local/bin/keytrap
USER 65532:65532
# The home of the nonroot user is the one writable directory of the image: the embedded
# SQLite database and a generated master key land there unless a volume is mounted (the
# chart mounts /data in its all-in-one mode and sets the paths itself).
WORKDIR /home/nonroot
# Inside a container the listeners must bind all interfaces (the binary defaults to
# loopback for a laptop).
ENV KEYTRAP_DATA_DIR=/home/nonroot \
    KEYTRAP_API_LISTEN=0.0.0.0:8700 \
    KEYTRAP_TRAP_LISTEN=0.0.0.0:8701 \
    KEYTRAP_HEALTH_LISTEN=0.0.0.0:8702
# 8700 management API, 8701 trap, 8702 health and metrics.
EXPOSE 8700 8701 8702
ENTRYPOINT ["/usr/local/bin/keytrap"]
CMD ["serve"]
