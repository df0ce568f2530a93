# syntax=docker/dockerfile:1
# A test fixture, not shipped: PostgreSQL 15 from Debian's packages, for the real-pod tests of a
# node on PostgreSQL (a production cluster brings its own PostgreSQL). scripts/images builds it
# as docker.io/jukinet/test-postgres. The superuser `postgres` has the password in
# POSTGRES_PASSWORD for TCP connections (scram-sha-256, from anywhere: a test namespace only).
ARG RUNTIME_IMAGE=debian:bookworm-slim
FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* /var/lib/postgresql/15/main
COPY tests/cluster/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
USER postgres
ENV PGDATA=/var/lib/pg/data
EXPOSE 5432
ENTRYPOINT ["/bin/sh", "/usr/local/bin/postgres-entrypoint"]
