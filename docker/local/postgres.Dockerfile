# PostgreSQL from Debian, for machines where the official postgres image cannot be pulled (docker/compose.local.yaml).
# It honours what the compose stack uses of the official image: POSTGRES_USER/PASSWORD/DB on first start, data in
# /var/lib/postgresql/data, pg_isready for the healthcheck.
ARG ROOTFS_IMAGE=arena-local/debian:bookworm-py311
# hadolint ignore=DL3006
FROM ${ROOTFS_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data && chown -R postgres:postgres /var/lib/postgresql
COPY docker/local/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PGDATA=/var/lib/postgresql/data PGHOST=/tmp PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The postgres user of the Debian package (its uid is assigned at install time).
# hadolint ignore=DL3066
USER postgres
EXPOSE 5432
ENTRYPOINT ["postgres-entrypoint"]
