# shellcheck shell=bash
# lib.sh - what the parts share: paths, logging, the lock, apt, daemons. Sourced; it only defines.

readonly STATE_DIR=/var/lib/fastapi-docker CACHE_DIR=/var/cache/fastapi-docker
readonly STEP_LOG_DIR=/var/log/fastapi-docker-offline-env  # a log per step: apt, debootstrap, ...
# shellcheck disable=SC2034  # DEBIAN_MIRROR: for engine.sh and images.sh
readonly DEBIAN_MIRROR=http://deb.debian.org/debian TIMEOUT=60  # seconds a daemon may take to answer

log() { printf '%s: [%3ds] %s\n' "$PROG" "$SECONDS" "$*" >&2; }
warn() { log "WARNING: $*"; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

die_log() {  # die_log LOG MESSAGE : LOG's tail, then die
  tail -n 25 "$1" 2>/dev/null | sed "s/^/$PROG:   /" >&2 || true
  die "$2 (log: $1)"
}

run_logged() {  # run_logged NAME CMD... : output to $STEP_LOG_DIR/NAME.log; on failure its tail, and die
  "${@:2}" >"$STEP_LOG_DIR/$1.log" 2>&1 </dev/null || die_log "$STEP_LOG_DIR/$1.log" "command failed: ${*:2}"
}

take_lock() {  # one provisioning at a time, on fd 9 (a child of the holder, multiplatform.sh, has it)
  local lock=$STATE_DIR/offline-env.lock
  mkdir -p "$STATE_DIR" "$CACHE_DIR" "$STEP_LOG_DIR"
  [[ /proc/$$/fd/9 -ef $lock ]] || exec 9>"$lock"
  flock -n 9 || { log "another provisioning holds $lock; waiting (max 900 s)"
    flock -w 900 9 || die "timed out waiting for the lock $lock"; }
}

pkg_installed() { [[ $(dpkg-query -W -f '${Status}\n' "$@" 2>/dev/null | grep -cx 'install ok installed') == "$#" ]]; }

apt_install() {  # apt_install PKG... : those missing, from the system's own sources (one update per run)
  local p want=()
  for p; do pkg_installed "$p" || want+=("$p"); done
  [[ ${#want[@]} -gt 0 ]] || return 0
  log "apt-get install ${want[*]}"
  [[ -n ${APT_UPDATED:-} ]] || { run_logged apt-update apt-get update; APT_UPDATED=1; }
  run_logged apt-install env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${want[@]}"
}

# daemon LOG CMD... : CMD for good, in a session of its own, without the lock (fd 9) or the caller's stdout (fd 3)
daemon() { (cd / && exec nohup setsid "${@:2}") >>"$1" 2>&1 </dev/null 3>&- 9>&- & }

wait_until() {  # wait_until WHAT LOG CMD... : poll CMD; after TIMEOUT s show LOG's tail and die
  local deadline=$((SECONDS + TIMEOUT))
  until "${@:3}"; do
    ((SECONDS < deadline)) || die_log "$2" "$1 did not answer within ${TIMEOUT}s"
    sleep 0.5
  done
}
