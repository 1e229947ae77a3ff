#!/bin/sh
# Runs once, when the TimescaleDB volume is first initialised: creates the
# read-only role Grafana's SQL panels use. Its password comes from
# GRAFANA_DB_PASSWORD (deploy/.env); the tables are created later by the
# plugin (as POSTGRES_USER), so SELECT is granted on them in advance.
set -eu
psql -v ON_ERROR_STOP=1 -v reader_password="$GRAFANA_DB_PASSWORD" \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'reader_password';
GRANT CONNECT ON DATABASE analytics TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE analytics IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
SQL
