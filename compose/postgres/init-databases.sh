#!/bin/sh
# Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d): one database and
# one owner for the MLflow backend store, one for the prediction log and the monitoring history.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE mlflow LOGIN PASSWORD '${MLFLOW_DB_PASSWORD}';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE churn LOGIN PASSWORD '${CHURN_DB_PASSWORD}';
CREATE DATABASE churn OWNER churn;
SQL
