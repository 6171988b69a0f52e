#!/usr/bin/env bash
# One database per service (SPEC §3: no service reads another's database), each owned by its own
# login role and closed to everyone else, plus a read-only role for auditors.
#
# The postgres image runs this once, when it initialises an empty data directory
# (/docker-entrypoint-initdb.d/). Passwords come from the environment compose.yaml gives the
# container; they also appear in the services' ANYAM_DATABASE_URL, so keep them URL-safe
# (e.g. `openssl rand -hex 24`).
#
# Everything runs in a subshell: the image *sources* an initdb script that lost its executable bit,
# and our `set` options must not leak into its entrypoint.
create_databases() (
set -euo pipefail

: "${AUDITOR_DB_PASSWORD:?set AUDITOR_DB_PASSWORD (deploy/secrets.env)}"

for service in enrollment production payout; do
    password_variable="${service^^}_DB_PASSWORD"
    password="${!password_variable:?set ${password_variable} (deploy/secrets.env)}"
    # The service's role owns its database and so its public schema (PostgreSQL 15+): every
    # service creates its own tables at start, so it needs CREATE there and nowhere else.
    # No superuser, no CREATEDB, no CREATEROLE. CONNECT is revoked from PUBLIC, so one
    # service's role cannot even open another service's database.
    psql --set=ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
         --set=role="anyam_${service}" --set=password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
done

# The auditor reads the ledger and the production records, never writes. It gets no access to the
# enrollment database: personal data lives only there (sealed), and auditors see residents through
# the APIs and the topics, which carry opaque ids only.
psql --set=ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     --set=password="$AUDITOR_DB_PASSWORD" <<'SQL'
CREATE ROLE anyam_auditor LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
SQL
for service in production payout; do
    # Tables do not exist yet (each service creates its own at start), so grant SELECT on
    # whatever the service's role creates in the future, in that database.
    psql --set=ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "anyam_${service}" \
         --set=owner="anyam_${service}" --set=database="anyam_${service}" <<'SQL'
GRANT CONNECT ON DATABASE :"database" TO anyam_auditor;
GRANT USAGE ON SCHEMA public TO anyam_auditor;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO anyam_auditor;
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO anyam_auditor;
ALTER ROLE anyam_auditor IN DATABASE :"database" SET default_transaction_read_only = on;
SQL
done
)

create_databases
