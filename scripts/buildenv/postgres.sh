# shellcheck shell=bash
# postgres.sh - the postgres stand-in's recipe (a row of images.sh): Debian's PostgreSQL in the official image's
# configuration, with an entrypoint (files/postgres/) that honours the official image's documented contract.

# shellcheck disable=SC2034  # PG_INCLUDE: for the row of images.sh (postgresql itself comes by apt_in, see below)
readonly PG_MAJOR=17 PG_INCLUDE=ca-certificates,tzdata
RECIPE_FUNCTIONS+=(["postgres_rootfs"]="") RECIPE_FILES+=(["postgres_rootfs"]="postgres postgres.changes")

postgres_rootfs() {  # postgres_rootfs DIR RELEASE : postgresql-$PG_MAJOR with no cluster (the entrypoint makes one)
  local dir=$1
  mkdir -p "$dir/etc/postgresql-common" "$dir/docker-entrypoint-initdb.d"
  echo 'create_main_cluster = false' >"$dir/etc/postgresql-common/createcluster.conf"
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"; chmod 755 "$dir/usr/sbin/policy-rc.d"  # no service start
  in_root "$dir" sh -c 'groupadd -r -g 999 postgres && useradd -r -g postgres -u 999 -d /var/lib/postgresql -s /bin/bash postgres'
  apt_in "$dir" "postgresql-$PG_MAJOR"  # its postinst keeps that user: uid 999, as the official image's
  rm -rf "$dir/usr/sbin/policy-rc.d" "$dir/var/lib/postgresql/$PG_MAJOR" "$dir"/var/lib/apt/lists/* \
    "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
  truncate -s 0 "$dir/etc/resolv.conf"
  cp -r "$FILES/postgres/." "$dir/"; chmod 755 "$dir/usr/local/bin/docker-entrypoint.sh"
  in_root "$dir" install -d -o postgres -g postgres -m 2775 /var/run/postgresql
  in_root "$dir" install -d -o postgres -g postgres -m 1777 /var/lib/postgresql/data  # any --user may init it
  [[ -x $dir/usr/lib/postgresql/$PG_MAJOR/bin/pg_isready ]] || die "$dir: no pg_isready"
  sed "s/@PG_MAJOR@/$PG_MAJOR/" "$FILES/postgres.changes"
}
