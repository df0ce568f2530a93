# syntax=docker/dockerfile:1
# The jukinet operator image. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t jukinet/juki-operator:0.1.0 .
# (docker/operator.Dockerfile.dockerignore keeps target/ and .git out of the context.)

# --- build: the release binary, with the same flags CI uses -----------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace: cargo needs every member's manifest to resolve Cargo.lock.
COPY Cargo.toml Cargo.lock ./
COPY calendar calendar
COPY codes codes
COPY operator operator
COPY services services
COPY callcenter callcenter
COPY tests tests
COPY examples examples
COPY crds crds
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p juki-operator --bin juki-operator \
 && install -D target/release/juki-operator /out/juki-operator

# --- runtime: Debian slim, curl for the health check, non-root ---------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 juki \
 && useradd --system --uid 65532 --gid juki --no-create-home --shell /usr/sbin/nologin juki
COPY --from=build /out/juki-operator /usr/local/bin/juki-operator
USER 65532:65532
# /metrics, /healthz and /readyz (--metrics-addr, JUKI_METRICS_ADDR).
ENV JUKI_METRICS_ADDR=0.0.0.0:9090
EXPOSE 9090
# For plain `docker run`; in Kubernetes the chart's liveness/readiness probes hit the same paths.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9090/healthz"]
ENTRYPOINT ["/usr/local/bin/juki-operator"]
