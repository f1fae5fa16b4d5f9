# shellcheck shell=bash
# engine.sh - Docker Engine 26.1 with buildx and compose v2: Debian trixie's packages on bookworm (whose
# own docker.io is 20.10), over bookworm's runc, iptables and tini; an older running engine is replaced.

readonly ENGINE_MIN=26.1 ENGINE_DEBS=(docker.io containerd docker-cli docker-buildx docker-compose)
readonly DOCKERD_LOG=/var/log/dockerd-offline-env.log TRIXIE_APT_DIR=$STATE_DIR/apt-trixie  # for the .debs only

docker_answers() { timeout 10 docker info >/dev/null 2>&1; }
server_version() { docker version -f '{{.Server.Version}}' 2>/dev/null || true; }

engine_pids() {  # engine_pids NAME : the main engine's, not those of multiplatform.sh's and nodes.sh's dockerds
  local pid
  for pid in $(pgrep -x "$1"); do grep -qs -e multiplatform -e swarm-worker "/proc/$pid/cmdline" || echo "$pid"; done
}

engine_installed() {
  pkg_installed "${ENGINE_DEBS[@]}" && dpkg --compare-versions "$(dpkg-query -W -f '${Version}' docker.io)" ge "$ENGINE_MIN" &&
    docker buildx version >/dev/null 2>&1 && docker compose version >/dev/null 2>&1
}

stop_old_dockerd() {  # SIGTERM, up to 30 s to finish, then SIGKILL; then its containerd
  [[ -n $(engine_pids dockerd) ]] || return 0
  log "stopping the running dockerd $(server_version) before the upgrade"
  engine_pids dockerd | xargs -r kill
  for _ in {1..60}; do [[ -n $(engine_pids dockerd) ]] || break; sleep 0.5; done
  engine_pids dockerd | xargs -r kill -9
  engine_pids containerd | xargs -r kill
}

install_engine() {
  local apt=(apt-get -o Dir::Etc::sourcelist="$TRIXIE_APT_DIR/sources.list" -o Dir::Etc::sourceparts=-
    -o Dir::State::lists="$TRIXIE_APT_DIR/lists" -o Dir::Cache="$TRIXIE_APT_DIR/cache"
    -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" -o APT::Sandbox::User=root)
  log "fetching ${ENGINE_DEBS[*]} .debs from trixie (apt dir $TRIXIE_APT_DIR)"
  rm -rf "$TRIXIE_APT_DIR/debs"
  mkdir -p "$TRIXIE_APT_DIR/lists/partial" "$TRIXIE_APT_DIR/cache/archives/partial" "$TRIXIE_APT_DIR/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR trixie main" >"$TRIXIE_APT_DIR/sources.list"
  run_logged apt-trixie-update "${apt[@]}" update
  (cd "$TRIXIE_APT_DIR/debs" && run_logged apt-trixie-download "${apt[@]}" download "${ENGINE_DEBS[@]}")
  stop_old_dockerd
  log "dpkg -i $(cd "$TRIXIE_APT_DIR/debs" && echo *.deb)"
  # Without policy-rc.d the packages' service start is refused: dockerd is started below.
  run_logged dpkg-engine env DEBIAN_FRONTEND=noninteractive dpkg -i "$TRIXIE_APT_DIR"/debs/*.deb
  engine_installed || die "docker.io >= $ENGINE_MIN with buildx and compose does not work after dpkg -i"
}

dockerd_up() {  # for wait_until; dies at once if dockerd exited
  docker_answers || { [[ -n $(engine_pids dockerd) ]] && return 1; die_log "$DOCKERD_LOG" "dockerd exited during start-up"; }
}

ensure_engine() {
  apt_install curl ca-certificates runc iptables tini adduser libsystemd0  # what the .debs depend on
  engine_installed || install_engine
  ! docker_answers || dpkg --compare-versions "$(server_version)" ge "$ENGINE_MIN" || stop_old_dockerd  # not upgraded yet
  if ! docker_answers; then
    [[ -n $(engine_pids dockerd) ]] ||
      { log "starting dockerd (log: $DOCKERD_LOG)"; rm -f /var/run/docker.pid; daemon "$DOCKERD_LOG" dockerd; }
    wait_until dockerd "$DOCKERD_LOG" dockerd_up
  fi
  [[ $(docker info -f '{{.Driver}}') == overlay2 ]] || warn "storage driver not overlay2: every layer a full copy"
  log "engine $(server_version), buildx $(docker buildx version | awk '{print $2}'), compose $(docker compose version --short)"
}
