#!/usr/bin/env bash
# buildenv/postgres.sh - a stand-in for the official `postgres:17` image, for the database tests
# of the deploy tier (the generated compose.yaml names `postgres:17`; no registry is reachable here).
#
# Built like offline-env.sh's python stand-ins: debootstrap trixie (minbase), Debian's
# postgresql-17 installed in a chroot, `docker import` with the official image's configuration.
# The entrypoint honours the official image's documented contract, and nothing more:
#   POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER (postgres),
#   POSTGRES_DB (= the user), each also as a *_FILE variant (compose and Swarm secrets),
#   POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (scram-sha-256), PGDATA
#   (/var/lib/postgresql/data, a VOLUME), initialisation only on an empty data directory,
#   /docker-entrypoint-initdb.d/*.sh|*.sql, port 5432 on all addresses, the server as the
#   non-root user `postgres`, pg_isready and psql on PATH, ENTRYPOINT docker-entrypoint.sh,
#   CMD postgres, STOPSIGNAL SIGINT (fast shutdown).
#
# Idempotent: the image carries the hash of its recipe (label); a run with an image of the same
# recipe only checks and takes a second. OFFLINE_ENV_IMAGES=none skips it,
# OFFLINE_ENV_FORCE_REBUILD=1 rebuilds it.
# Usage: bash scripts/buildenv/postgres.sh   (root; stdout stays empty, progress goes to stderr;
# logs in $OFFLINE_ENV_LOG_DIR/fastapi-docker-offline-env/postgres-*.log)
set -euo pipefail

readonly PROG=postgres-standin
readonly STATE_DIR=${OFFLINE_ENV_STATE_DIR:-/var/lib/fastapi-docker}
readonly CACHE_DIR=${OFFLINE_ENV_CACHE_DIR:-/var/cache/fastapi-docker}
readonly LOG_DIR=${OFFLINE_ENV_LOG_DIR:-/var/log}
readonly STEP_LOG_DIR=$LOG_DIR/fastapi-docker-offline-env
readonly DEBIAN_MIRROR=${OFFLINE_ENV_DEBIAN_MIRROR:-http://deb.debian.org/debian}
readonly IMAGES_SELECTION=${OFFLINE_ENV_IMAGES:-all}
readonly FORCE_REBUILD=${OFFLINE_ENV_FORCE_REBUILD:-0}
readonly LABEL_RECIPE=org.fastapi-docker.standin-recipe
# Bump to force a rebuild (it is part of the hash).
readonly RECIPE_VERSION=1
readonly PG_MAJOR=17
readonly RELEASE=trixie
readonly TAG=postgres:$PG_MAJOR
readonly ROOTFS=$STATE_DIR/rootfs/postgres-$PG_MAJOR

exec 3>&1 1>&2  # nothing on the caller's stdout (offline-env.sh's is its export lines)
log() { printf '%s: [%3ds] %s\n' "$PROG" "$SECONDS" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

[[ $# -eq 0 ]] || die "no arguments expected (got: $*)"
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot)"
if [[ $IMAGES_SELECTION == none ]]; then
  log "OFFLINE_ENV_IMAGES=none: $TAG not checked"
  exit 0
fi

run_logged() {  # run_logged NAME CMD... : output to a log; on failure its tail, then die
  local logf=$STEP_LOG_DIR/postgres-$1.log; shift
  mkdir -p "$STEP_LOG_DIR"
  if ! "$@" >"$logf" 2>&1 </dev/null; then
    tail -n 25 "$logf" | sed "s/^/$PROG:   /" >&2
    die "command failed: $* (full log: $logf)"
  fi
}

in_root() {  # in_root CMD... : in the rootfs, with a clean environment
  chroot "$ROOTFS" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
    PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# The official image's docker-entrypoint.sh contract, in a small bash script of its own.
entrypoint() {
  cat <<'ENTRYPOINT'
#!/usr/bin/env bash
# Stand-in for the official postgres image's entrypoint (its documented contract only).
set -Eeuo pipefail

file_env() {  # file_env VAR [DEFAULT]: VAR from $VAR or the file named by ${VAR}_FILE
  local var=$1 file_var="${1}_FILE" def=${2:-}
  if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
    echo >&2 "error: both $var and $file_var are set (but are exclusive)"; exit 1
  fi
  local val=$def
  if [[ -n ${!var:-} ]]; then val=${!var}; elif [[ -n ${!file_var:-} ]]; then val=$(<"${!file_var}"); fi
  export "$var"="$val"
  unset "$file_var"
}

if [[ ${1:0:1} == - ]]; then set -- postgres "$@"; fi

if [[ $1 == postgres ]]; then
  export PGDATA=${PGDATA:-/var/lib/postgresql/data}
  # As root, like the official image: a secret file may be readable by root only.
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  if [[ $(id -u) == 0 ]]; then
    # The volume may arrive root-owned: hand it to postgres, then drop root for good.
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
  fi
  auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
  if [[ ! -s $PGDATA/PG_VERSION ]]; then
    if [[ -z $POSTGRES_PASSWORD && $auth != trust ]]; then
      cat >&2 <<'EOF'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
EOF
      exit 1
    fi
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
      $POSTGRES_INITDB_ARGS
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    printf 'host all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
    # A server on the socket only while the database and init scripts are made.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    export PGUSER=$POSTGRES_USER PGPASSWORD=$POSTGRES_PASSWORD
    if [[ $POSTGRES_DB != postgres ]]; then
      psql -v ON_ERROR_STOP=1 --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    for f in /docker-entrypoint-initdb.d/*; do
      case $f in
        *.sh) echo "running $f"; . "$f" ;;
        *.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 --dbname "$POSTGRES_DB" -f "$f" ;;
        *) ;;
      esac
    done
    unset PGPASSWORD
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "PostgreSQL init process complete; ready for start up."
  else
    echo "PostgreSQL Database directory appears to contain a database; Skipping initialization"
  fi
fi
exec "$@"
ENTRYPOINT
}

import_changes() {  # the official image's configuration
  printf '%s\n' \
    "ENV PATH=/usr/lib/postgresql/$PG_MAJOR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "ENV LANG=C.UTF-8" \
    "ENV PG_MAJOR=$PG_MAJOR" \
    "ENV PGDATA=/var/lib/postgresql/data" \
    "VOLUME /var/lib/postgresql/data" \
    'ENTRYPOINT ["docker-entrypoint.sh"]' \
    "STOPSIGNAL SIGINT" \
    "EXPOSE 5432" \
    'CMD ["postgres"]'
}

make_rootfs() {
  local cache=$CACHE_DIR/debootstrap/$RELEASE
  remove_rootfs
  mkdir -p "$ROOTFS" "$cache"
  log "debootstrap --variant=minbase $RELEASE (log: $STEP_LOG_DIR/postgres-debootstrap.log)"
  run_logged debootstrap debootstrap --variant=minbase --cache-dir="$cache" \
    --include=ca-certificates,tzdata "$RELEASE" "$ROOTFS" "$DEBIAN_MIRROR"
  umount_under
  # No cluster made by the package (the entrypoint makes one in PGDATA), no services started.
  mkdir -p "$ROOTFS/etc/postgresql-common"
  printf 'create_main_cluster = false\n' >"$ROOTFS/etc/postgresql-common/createcluster.conf"
  printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
  chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
  cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
  log "apt-get install postgresql-$PG_MAJOR (in chroot; log: $STEP_LOG_DIR/postgres-apt.log)"
  run_logged apt in_root sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-$PG_MAJOR && apt-get clean"
  umount_under
  rm -f "$ROOTFS/usr/sbin/policy-rc.d" "$ROOTFS/etc/resolv.conf"
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS/var/lib/postgresql/$PG_MAJOR"
  entrypoint >"$ROOTFS/usr/local/bin/docker-entrypoint.sh"
  chmod 755 "$ROOTFS/usr/local/bin/docker-entrypoint.sh"
  mkdir -p "$ROOTFS/docker-entrypoint-initdb.d" "$ROOTFS/var/lib/postgresql/data"
  in_root chown postgres:postgres /var/lib/postgresql/data
  in_root install -d -o postgres -g postgres -m 2775 /var/run/postgresql
  in_root id -u postgres >/dev/null || die "no postgres user in the rootfs"
  [[ -x $ROOTFS/usr/lib/postgresql/$PG_MAJOR/bin/pg_isready ]] || die "no pg_isready in the rootfs"
}

recipe_hash() {
  { printf 'recipe-version=%s\nmirror=%s\nrelease=%s\n' "$RECIPE_VERSION" "$DEBIAN_MIRROR" "$RELEASE"
    declare -f entrypoint import_changes make_rootfs in_root; } | sha256sum | cut -c1-16
}

image_label() { docker image inspect -f "{{ index .Config.Labels \"$LABEL_RECIPE\" }}" "$TAG" 2>/dev/null || true; }

umount_under() {
  local dir m
  [[ -d $ROOTFS ]] || return 0
  dir=$(readlink -f "$ROOTFS")
  awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r |
    while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done
}
remove_rootfs() {
  [[ -d $ROOTFS ]] || return 0
  umount_under
  rm -rf --one-file-system "$ROOTFS"
}

hash=$(recipe_hash)
if [[ $FORCE_REBUILD != 1 && $(image_label) == "$hash" ]]; then
  log "$TAG is current (recipe $hash); skipping"
  exit 0
fi
mkdir -p "$STATE_DIR" "$STEP_LOG_DIR"
exec 8>"$STATE_DIR/postgres-standin.lock"
flock -w 900 8 || die "timed out waiting for $STATE_DIR/postgres-standin.lock"
if [[ $FORCE_REBUILD != 1 && $(image_label) == "$hash" ]]; then  # built while we waited
  log "$TAG is current (recipe $hash); skipping"
  exit 0
fi
trap remove_rootfs EXIT
old_id=$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
t0=$SECONDS
make_rootfs
changes=()
while IFS= read -r c; do changes+=(--change "$c"); done < <(import_changes)
changes+=(--change "LABEL $LABEL_RECIPE=$hash" --change "LABEL org.fastapi-docker.standin=postgres-$PG_MAJOR-$RELEASE")
log "docker import -> $TAG"
tar --numeric-owner -C "$ROOTFS" -c . |
  docker import "${changes[@]}" -m "fastapi-docker offline stand-in (postgres $PG_MAJOR, $RELEASE, recipe $hash)" - "$TAG" >/dev/null ||
  die "docker import of $ROOTFS failed"
new_id=$(docker image inspect -f '{{.Id}}' "$TAG")
if [[ -n $old_id && $old_id != "$new_id" ]]; then docker image rm "$old_id" >/dev/null 2>&1 || true; fi
log "done: $TAG, $(($(docker image inspect -f '{{.Size}}' "$TAG") / 1000000)) MB, in $((SECONDS - t0))s"
