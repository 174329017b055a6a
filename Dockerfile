# syntax=docker/dockerfile:1
# sso-sidecar container image.
#
#   docker build -t ghcr.io/example/sso-sidecar:0.1.0 .
#
# The binary uses rustls with the ring provider (no OpenSSL) and links glibc dynamically, so the
# runtime is distroless "cc" (glibc, libgcc, CA certificates, tzdata; no shell, no package
# manager) on Debian 12, the same release as the builder. Checked by scripts/validate-deploy
# (hadolint).

# Pinned to the toolchain CI builds with; Cargo.toml's rust-version is the floor.
FROM rust:1.95-bookworm AS builder
WORKDIR /build
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
# The same build as CI: `cargo build --release --locked`. The cache mounts keep downloaded crates
# and compiled dependencies between local builds (a source change rebuilds in ~30 s, not ~4 min);
# target/ is a cache mount, so the binary is copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked \
    && cp target/release/sso-sidecar /usr/local/bin/sso-sidecar

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/example/sso-sidecar
LABEL org.opencontainers.image.title="sso-sidecar" \
      org.opencontainers.image.description="Authenticating reverse proxy (OpenID Connect) that adds SSO in front of an unmodified OpenRag backend" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=builder /usr/local/bin/sso-sidecar /usr/local/bin/sso-sidecar
# Numeric uid:gid (distroless "nonroot"), so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# 8000: public listener (SSO_SIDECAR_LISTEN); 9090: admin /healthz /readyz /metrics
# (SSO_SIDECAR_ADMIN_LISTEN).
EXPOSE 8000 9090
# The binary probes its own admin listener (no curl or shell in the image). It reads the same
# configuration as `run`: when admin_listen is moved in a TOML file, pass that file through
# SSO_SIDECAR_CONFIG rather than --config so the probe sees it too. Kubernetes ignores
# HEALTHCHECK and uses the httpGet probes in deploy/.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/sso-sidecar", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/sso-sidecar"]
CMD ["run"]
