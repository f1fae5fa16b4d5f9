# shellcheck shell=bash
# lib.sh - what the parts share: paths, logging, the lock, apt, daemons. Sourced; it only defines.

readonly STATE_DIR=/var/lib/fastapi-docker CACHE_DIR=/var/cache/fastapi-docker
readonly STEP_LOG_DIR=/var/log/fastapi-docker-offline-env  # a log per step: apt, debootstrap, ...
# shellcheck disable=SC2034  # used by engine.sh and images.sh
readonly DEBIAN_MIRROR=http://deb.debian.org/debian
readonly TIMEOUT=60  # seconds a daemon may take to answer

log() { printf '%s: [%3ds] %s\n' "$PROG" "$SECONDS" "$*" >&2; }
warn() { log "WARNING: $*"; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

run_logged() {  # run_logged NAME CMD... : output to $STEP_LOG_DIR/NAME.log; on failure its tail, and die
  local logf=$STEP_LOG_DIR/$1.log; shift
  "$@" >"$logf" 2>&1 </dev/null && return 0
  tail -n 25 "$logf" | sed "s/^/$PROG:   /" >&2
  die "command failed: $* (full log: $logf)"
}

# One provisioning at a time (tests and people run it at once), on fd 9; a child of the holder
# (multiplatform.sh under env.sh) has it already. Same lock file as before this folder existed.
take_lock() {
  local lock=$STATE_DIR/offline-env.lock
  mkdir -p "$STATE_DIR" "$CACHE_DIR" "$STEP_LOG_DIR"
  [[ /proc/$$/fd/9 -ef $lock ]] || exec 9>"$lock"
  flock -n 9 && return 0
  log "another provisioning holds $lock; waiting (max 900 s)"
  flock -w 900 9 || die "timed out waiting for the lock $lock"
}

pkg_installed() { [[ $(dpkg-query -W -f '${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]; }

apt_install() {  # apt_install PKG... : those missing, from the system's own sources
  local p want=()
  for p; do pkg_installed "$p" || want+=("$p"); done
  [[ ${#want[@]} -gt 0 ]] || return 0
  log "apt-get install ${want[*]}"
  [[ -n ${APT_UPDATED:-} ]] || run_logged apt-update apt-get update
  APT_UPDATED=1
  run_logged apt-install env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${want[@]}"
}

# daemon LOG CMD... : CMD for good, in a session of its own, holding neither the lock (fd 9) nor
# the caller's stdout (fd 3: `$(bash env.sh)` would not return while a daemon held it).
daemon() {
  local logf=$1; shift
  (cd / && exec nohup setsid "$@") >>"$logf" 2>&1 </dev/null 3>&- 9>&- &
}

wait_until() {  # wait_until WHAT LOG CMD... : poll CMD; after TIMEOUT s show LOG's tail and die
  local what=$1 logf=$2 deadline=$((SECONDS + TIMEOUT)); shift 2
  until "$@"; do
    if ((SECONDS >= deadline)); then
      tail -n 20 "$logf" 2>/dev/null | sed "s/^/$PROG:   /" >&2 || true
      die "$what did not answer within ${TIMEOUT}s (log: $logf)"
    fi
    sleep 0.5
  done
}
