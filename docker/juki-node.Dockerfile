# syntax=docker/dockerfile:1
# Base images are build arguments: the public ones by default; scripts/images passes images made
# from Debian's packages on machines that reach no registry.
ARG BUILDER_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
# The jukinet node service image (national, prefecture and CS roles; `serve` and the `batch`
# subcommands the daily Jobs run). Build from the repository root:
#   docker build -f docker/juki-node.Dockerfile -t jukinet/juki-node:0.1.0 .
# (docker/juki-node.Dockerfile.dockerignore keeps target/ and .git out of the context.)

# --- build: the release binary, with the same flags CI uses -----------------------------------
FROM ${BUILDER_IMAGE} AS build
# libpq for diesel's PostgreSQL backend (SQLite is bundled).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace (cargo needs every member's manifest to resolve Cargo.lock) and .cargo/,
# so the binary is built with the same flags as the tested one; the .dockerignore keeps
# target/ and .git out.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p juki-node --bin juki-node \
 && install -D target/release/juki-node /out/juki-node

# --- runtime: Debian slim with libpq, pg_dump/pg_restore for a PostgreSQL node's backup Job,
# curl for the health check, non-root ------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libpq5 postgresql-client \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 juki \
 && useradd --system --uid 65532 --gid juki --no-create-home --shell /usr/sbin/nologin juki \
 && install -d -o 65532 -g 65532 /var/lib/juki
COPY --from=build /out/juki-node /usr/local/bin/juki-node
USER 65532:65532
# The embedded SQLite database lives on the volume the operator mounts at /var/lib/juki; the
# batch Jobs write backups to their own volume at /var/lib/juki-backups (JUKI_BACKUP_DIR).
VOLUME ["/var/lib/juki"]
ENV JUKI_LISTEN=0.0.0.0:8080
EXPOSE 8080
# For plain `docker run`; in Kubernetes the operator's Deployment probes hit the same paths.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/juki-node"]
CMD ["serve"]
