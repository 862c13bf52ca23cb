#!/bin/sh
# Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d): one database and
# one owner for the MLflow backend store, one for the prediction log and the monitoring history;
# a read-only role for Grafana.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE mlflow LOGIN PASSWORD '${MLFLOW_DB_PASSWORD}';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE churn LOGIN PASSWORD '${CHURN_DB_PASSWORD}';
CREATE DATABASE churn OWNER churn;
CREATE ROLE grafana_ro LOGIN PASSWORD '${GRAFANA_DB_PASSWORD}';
SQL
# Grafana reads both databases, read-only, including tables their owners create later.
for pair in mlflow:mlflow churn:churn; do
  db=${pair%%:*}; owner=${pair##*:}
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$db" <<SQL
GRANT CONNECT ON DATABASE $db TO grafana_ro;
GRANT USAGE ON SCHEMA public TO grafana_ro;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_ro;
ALTER DEFAULT PRIVILEGES FOR ROLE $owner IN SCHEMA public GRANT SELECT ON TABLES TO grafana_ro;
SQL
done
