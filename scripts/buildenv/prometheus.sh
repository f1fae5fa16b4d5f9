# shellcheck shell=bash
# prometheus.sh - the prometheus stand-in's recipe (a row of images.sh): Debian's Prometheus server binary in the
# official image's layout (prom/prometheus: /bin/prometheus, /etc/prometheus, /prometheus, user nobody).

# shellcheck disable=SC2034  # PROM_*: for the row of images.sh; PROM_INCLUDE is pg17's, so they share a debootstrap
readonly PROM_VERSION=2.53.3 PROM_INCLUDE=ca-certificates,tzdata
RECIPE_FUNCTIONS+=(["prometheus_rootfs"]="") RECIPE_FILES+=(["prometheus_rootfs"]="prometheus.changes")

prometheus_rootfs() {  # prometheus_rootfs DIR RELEASE : the package's binary and what the official image copies
  local dir=$1 deb=$1/tmp/prometheus-deb ex=$1/tmp/prometheus-deb/usr/share/doc/prometheus/examples
  cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
  log "[${dir##*/}] apt-get download prometheus (in a chroot; log: $STEP_LOG_DIR/apt-${dir##*/}.log)"
  # Not installed: its Depends are the classic web UI's JavaScript and promtool, neither needed to scrape or query.
  run_logged "apt-${dir##*/}" in_root "$dir" sh -c 'cd /tmp && apt-get download prometheus'
  run_logged "dpkg-${dir##*/}" dpkg-deb -x "$dir"/tmp/prometheus_*.deb "$deb"
  install -m 755 "$deb/usr/bin/prometheus" "$dir/usr/bin/prometheus"  # /bin/prometheus: trixie's /bin is /usr/bin
  mkdir -p "$dir/etc/prometheus" "$dir/usr/share/prometheus"
  cp "$ex/prometheus.yml" "$dir/etc/prometheus/prometheus.yml"  # upstream's example, the official image's default
  cp -r "$ex/console_libraries" "$ex/consoles" "$deb/usr/share/prometheus/web" "$dir/usr/share/prometheus/"
  ln -s /usr/share/prometheus/console_libraries /usr/share/prometheus/consoles "$dir/etc/prometheus/"
  install -d -o 65534 -g 65534 "$dir/prometheus"; chown -R 65534:65534 "$dir/etc/prometheus"
  # slim, like debian:*-slim: no docs, man pages or locales; no apt lists, caches or host files
  find "$dir/usr/share/doc" -mindepth 1 \( -not -type d -not -name copyright -o -type d -empty \) -delete 2>/dev/null || true
  find "$dir"/usr/share/{groff,info,linda,lintian/overrides,locale,man} -mindepth 1 -delete 2>/dev/null || true
  rm -rf "$deb" "$dir"/tmp/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/log/apt/* "${dir:?}"/dev/*
  truncate -s 0 "$dir/etc/resolv.conf" "$dir/etc/hostname"; truncate -cs 0 "$dir/etc/machine-id"
  [[ $(in_root "$dir" /bin/prometheus --version 2>&1) == "prometheus, version $PROM_VERSION+"* ]] ||
    die "$dir: /bin/prometheus is not $PROM_VERSION (Debian moved on? update PROM_VERSION, the tag and the template)"
  cat "$FILES/prometheus.changes"
}
