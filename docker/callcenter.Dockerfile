# syntax=docker/dockerfile:1
# Base images are build arguments: the public ones by default; scripts/images passes images made
# from Debian's packages on machines that reach no registry.
ARG BUILDER_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
# The jukinet call center image (`juki-callcenter serve`, `migrate`, `seed`). Build from the
# repository root:
#   docker build -f docker/callcenter.Dockerfile -t jukinet/juki-callcenter:0.1.0 .
# (docker/callcenter.Dockerfile.dockerignore keeps target/ and .git out of the context.)

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
    cargo build --release --locked -p juki-callcenter --bin juki-callcenter \
 && install -D target/release/juki-callcenter /out/juki-callcenter

# --- runtime: Debian slim with libpq, curl for the health check, non-root ----------------------
FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libpq5 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 juki \
 && useradd --system --uid 65532 --gid juki --no-create-home --shell /usr/sbin/nologin juki \
 && install -d -o 65532 -g 65532 /var/lib/juki
COPY --from=build /out/juki-callcenter /usr/local/bin/juki-callcenter
USER 65532:65532
# The SQLite database (the default) lives on the chart's volume at /var/lib/juki.
VOLUME ["/var/lib/juki"]
ENV JUKI_CALLCENTER_LISTEN=0.0.0.0:8443 \
    JUKI_CALLCENTER_DATABASE=sqlite:///var/lib/juki/callcenter.db
EXPOSE 8443
# For plain `docker run --dev-mode`; with TLS the chart's probes use HTTPS.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["curl", "-fsSk", "-o", "/dev/null", "http://127.0.0.1:8443/healthz"]
ENTRYPOINT ["/usr/local/bin/juki-callcenter"]
CMD ["serve"]
