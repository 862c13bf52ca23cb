#!/bin/sh
# Entrypoint of the offline PostgreSQL image, as the upstream postgres image behaves for this stack:
# on an empty PGDATA, initdb with POSTGRES_USER / POSTGRES_PASSWORD, then run
# /docker-entrypoint-initdb.d/*.sh once against a server listening on its socket only; then exec "$@".
set -eu
: "${POSTGRES_USER:=postgres}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > "$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -k /var/run/postgresql" start >/dev/null
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "initdb: running $f"; PGHOST=/var/run/postgresql sh "$f" ;;
      *.sql) echo "initdb: running $f"; psql -h /var/run/postgresql -U "$POSTGRES_USER" -d postgres -v ON_ERROR_STOP=1 -f "$f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
  echo "initdb: done"
fi
exec "$@"
