#!/usr/bin/env bash
# docker-compose.yaml's PostgreSQL init (docker-entrypoint-initdb.d): runs once, as the superuser
# POSTGRES_USER, when the data volume is empty. Creates a role and a database per tenant of the
# server, each with its own password: the ODS (owner role `ods`), the webhook ingress's login
# `ods_ingress` (member of the insert-only group role `psa_erp_sync_inbox_writer`, whose grants
# on the inbox tables come with ODS migration 0015), the simulators and Marquez. The Airflow
# metadata database is POSTGRES_DB itself.
#
# `make e2e` runs this same script against its own PostgreSQL (PGHOST / PGPORT / PGPASSWORD set).
set -euo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v ods_password="$ODS_PASSWORD" \
  -v ingress_password="$ODS_INGRESS_PASSWORD" \
  -v simulators_password="$SIMULATORS_DB_PASSWORD" \
  -v marquez_password="$MARQUEZ_DB_PASSWORD" <<'SQL'
CREATE ROLE ods LOGIN PASSWORD :'ods_password';
CREATE DATABASE ods OWNER ods;
REVOKE ALL ON DATABASE ods FROM PUBLIC;
GRANT CONNECT ON DATABASE ods TO ods;

-- Created here because roles are cluster-wide and `ods` may not create roles; migration 0015
-- grants it exactly what the ingress needs inside the ODS.
CREATE ROLE psa_erp_sync_inbox_writer NOLOGIN;
CREATE ROLE ods_ingress LOGIN PASSWORD :'ingress_password' IN ROLE psa_erp_sync_inbox_writer;
GRANT CONNECT ON DATABASE ods TO ods_ingress;

CREATE ROLE simulators LOGIN PASSWORD :'simulators_password';
CREATE DATABASE simulators OWNER simulators;

CREATE ROLE marquez LOGIN PASSWORD :'marquez_password';
CREATE DATABASE marquez OWNER marquez;
SQL
