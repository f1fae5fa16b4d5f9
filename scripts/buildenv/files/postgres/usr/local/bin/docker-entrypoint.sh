#!/usr/bin/env bash
# The postgres stand-in's entrypoint: the official image's documented contract, and no more. POSTGRES_PASSWORD
# (required unless POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER, POSTGRES_DB, POSTGRES_INITDB_ARGS, each also
# as *_FILE (secrets); PGDATA initialised only when empty, /docker-entrypoint-initdb.d; the server as postgres.
set -Eeuo pipefail

file_env() {  # file_env VAR [DEFAULT] : VAR from itself, or from the file that ${VAR}_FILE names
  local file=${1}_FILE
  [[ -z ${!1:-} || -z ${!file:-} ]] || { echo >&2 "error: both $1 and $file are set (but are exclusive)"; exit 1; }
  if [[ -n ${!file:-} ]]; then export "$1=$(<"${!file}")"; else export "$1=${!1:-${2:-}}"; fi
  unset "$file"
}

if [[ ${1:-} == -* ]]; then set -- postgres "$@"; fi
[[ ${1:-} == postgres ]] || exec "$@"
export PGDATA=${PGDATA:-/var/lib/postgresql/data}
file_env POSTGRES_PASSWORD; file_env POSTGRES_USER postgres; file_env POSTGRES_DB "$POSTGRES_USER"; file_env POSTGRES_INITDB_ARGS
if [[ $(id -u) == 0 ]]; then  # as root a secret is readable; a volume may arrive root-owned: hand it over, drop root
  mkdir -p "$PGDATA"; chown postgres:postgres "$PGDATA"; chmod 700 "$PGDATA"
  HOME=/var/lib/postgresql exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi
if [[ -s $PGDATA/PG_VERSION ]]; then
  echo "PostgreSQL Database directory appears to contain a database; Skipping initialization"
  exec "$@"
fi
auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
if [[ -z $POSTGRES_PASSWORD && $auth != trust ]]; then
  cat >&2 <<'MSG'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
MSG
  exit 1
fi
# shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS: a list of words, as in the official image
initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
printf 'host all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start  # on the socket only, while the database is made
export PGUSER=$POSTGRES_USER PGPASSWORD=$POSTGRES_PASSWORD
if [[ $POSTGRES_DB != postgres ]]; then psql -v ON_ERROR_STOP=1 -d postgres -v db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'; fi
# shellcheck disable=SC1090  # the user's own scripts
for f in /docker-entrypoint-initdb.d/*; do
  case $f in
    *.sh) echo "running $f"; . "$f" ;;
    *.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 -d "$POSTGRES_DB" -f "$f" ;;
  esac
done
unset PGPASSWORD
pg_ctl -D "$PGDATA" -m fast -w stop
echo "PostgreSQL init process complete; ready for start up."
exec "$@"
