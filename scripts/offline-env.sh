#!/usr/bin/env bash
# offline-env.sh - turn a fresh Debian bookworm machine (run as root) into an
# offline Docker build environment for the fastapi-docker template's tests:
#
#   * a current Docker engine started in the background: Debian trixie's docker.io
#     (26.1) and containerd (1.7) with bookworm's own runc (trixie's runc needs a newer
#     glibc), and the buildx + compose v2 CLI plugins, all trixie .debs on bookworm;
#     bookworm's own docker.io is engine 20.10, out of support since 2023,
#   * stand-ins for the official python base images, built with debootstrap
#     (no container registry is reachable, so nothing can be pulled),
#   * a loopback PyPI pull-through mirror (devpi-server) for builds that use
#     `--network host`.
#
# Idempotent: a second run only checks and takes seconds.
# Run `offline-env.sh --help` for the interface.
set -euo pipefail

readonly PROG=offline-env
readonly STATE_DIR=${OFFLINE_ENV_STATE_DIR:-/var/lib/fastapi-docker}
readonly CACHE_DIR=${OFFLINE_ENV_CACHE_DIR:-/var/cache/fastapi-docker}
readonly LOG_DIR=${OFFLINE_ENV_LOG_DIR:-/var/log}
readonly MIRROR_PORT=${OFFLINE_ENV_MIRROR_PORT:-3141}
readonly MIRROR_HOST=127.0.0.1
readonly INDEX_URL="http://${MIRROR_HOST}:${MIRROR_PORT}/root/pypi/+simple/"
readonly DEVPI_VERSION=6.20.3
readonly DEVPI_VENV=${OFFLINE_ENV_DEVPI_VENV:-/opt/fastapi-docker/devpi-venv}
readonly DEVPI_SERVERDIR=$STATE_DIR/devpi
readonly DEVPI_LOG=$LOG_DIR/devpi-offline-env.log
readonly DOCKERD_LOG=$LOG_DIR/dockerd-offline-env.log
readonly DOCKERD_TIMEOUT=${OFFLINE_ENV_DOCKERD_TIMEOUT:-60}
readonly MIRROR_TIMEOUT=${OFFLINE_ENV_MIRROR_TIMEOUT:-60}
readonly DEBIAN_MIRROR=${OFFLINE_ENV_DEBIAN_MIRROR:-http://deb.debian.org/debian}
readonly CA_BUNDLE=${OFFLINE_ENV_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
readonly IMAGES_SELECTION=${OFFLINE_ENV_IMAGES:-all}
readonly FORCE_REBUILD=${OFFLINE_ENV_FORCE_REBUILD:-0}
readonly LABEL_RECIPE=org.fastapi-docker.standin-recipe
# Bump to force a rebuild of every stand-in image (it is part of the hash).
readonly RECIPE_VERSION=1

# ---------------------------------------------------------------------------
# Stand-in image specs: key|release|flavour|primary tag|alias tags (space sep)
# The keys/tags are exactly what the generated Dockerfiles use in FROM.
readonly IMAGE_SPECS=(
  "bookworm-slim|bookworm|slim|python:3.11-slim-bookworm|"
  "trixie-slim|trixie|slim|python:3.13-slim-trixie|python:3.13-slim"
  "bookworm-full|bookworm|full|python:3.11-bookworm|"
  "trixie-full|trixie|full|python:3.13-trixie|python:3.13"
)
# Packages on top of debootstrap's minbase (slim ~ official python:*-slim).
# No python3-pip: pip is installed into /usr/local from Debian's bundled wheel
# (see adapt_rootfs), so `pip install --upgrade pip` works as in the official
# image (Debian trixie's own pip has no RECORD and refuses to be upgraded).
readonly SLIM_INCLUDE="python3,python3-venv,ca-certificates,netbase,tzdata"
# Parts of the 3.11 stdlib that bookworm packages separately.
# shellcheck disable=SC2034  # read indirectly by slim_includes
readonly SLIM_INCLUDE_bookworm="python3-distutils,python3-lib2to3"
# "full" ~ official python:X.Y-RELEASE (buildpack-deps: compilers, dev tools).
readonly FULL_EXTRA="build-essential,python3-dev,pkg-config,git,curl,wget,libffi-dev,libssl-dev,procps"

usage() {
  cat <<EOF
Usage: bash scripts/offline-env.sh [--print-env | --check | --help]

Provision (as root, idempotent) an offline Docker build environment on Debian
bookworm: Docker engine + buildx/compose plugins, python base-image stand-ins
built with debootstrap, and a loopback PyPI mirror (devpi-server).

Modes:
  (no option)   provision everything that is missing, then print the
                environment (export lines) on stdout.
  --print-env   only print the export lines; change nothing (no root needed).
  --check       change nothing; exit 0 if everything is in place, else 1
                (what is missing goes to stderr).
  --help        this text.

Output contract: stdout carries ONLY 'export NAME=value' lines, so
    eval "\$(bash scripts/offline-env.sh)"
provisions and exports in one go. Progress, summary and errors go to stderr,
each line prefixed '${PROG}:'. Exit status is non-zero on any failure, with
the reason on stderr.

Exported:
  FASTAPI_DOCKER_INDEX_URL      ${INDEX_URL}
  FASTAPI_DOCKER_BUILD_NETWORK  host   (containers reach the mirror only via
                                the host's loopback: build with --network host)
  SSL_CERT_FILE                 ${CA_BUNDLE} (if unset: uv's CA bundle)

Images produced (label ${LABEL_RECIPE}=<recipe hash>;
re-runs skip images whose recipe is unchanged, rebuild changed ones):
  python:3.11-slim-bookworm                     (bookworm, Python 3.11, slim)
  python:3.13-slim-trixie  python:3.13-slim     (trixie,   Python 3.13, slim)
  python:3.11-bookworm                          (bookworm, Python 3.11, full)
  python:3.13-trixie       python:3.13          (trixie,   Python 3.13, full)

Environment:
  OFFLINE_ENV_IMAGES        which stand-ins to build: 'all' (default), 'none',
                            or a space/comma separated list of any of:
                            slim, full, bookworm, trixie, or an exact tag
                            (union of the matches).
  OFFLINE_ENV_FORCE_REBUILD 1 = rebuild the selected images even if current.
  OFFLINE_ENV_MIRROR_PORT   devpi port on ${MIRROR_HOST} (default 3141).
  OFFLINE_ENV_DOCKERD_TIMEOUT / OFFLINE_ENV_MIRROR_TIMEOUT  seconds (60).
  OFFLINE_ENV_STORAGE_DRIVER  pass --storage-driver to a dockerd we start.
  OFFLINE_ENV_DEBIAN_MIRROR   Debian archive URL (${DEBIAN_MIRROR}).
  OFFLINE_ENV_CA_BUNDLE       CA bundle devpi uses upstream (${CA_BUNDLE}).
  OFFLINE_ENV_STATE_DIR / OFFLINE_ENV_CACHE_DIR / OFFLINE_ENV_LOG_DIR
                            (${STATE_DIR}, ${CACHE_DIR}, ${LOG_DIR}).

Logs: ${DOCKERD_LOG}, ${DEVPI_LOG},
      ${LOG_DIR}/fastapi-docker-offline-env/*.log (apt, debootstrap, ...).
EOF
}

print_env() {
  printf 'export FASTAPI_DOCKER_INDEX_URL=%s\n' "$INDEX_URL"
  printf 'export FASTAPI_DOCKER_BUILD_NETWORK=host\n'
  # These machines reach PyPI through a TLS-intercepting proxy whose CA is in the system bundle;
  # uv (`make lock` in the tests) reads only SSL_CERT_FILE for it.
  if [[ -z ${SSL_CERT_FILE:-} && -r $CA_BUNDLE ]]; then
    printf 'export SSL_CERT_FILE=%s\n' "$CA_BUNDLE"
  fi
  # The multi-platform builder (linux/amd64 + linux/arm64), if it is provisioned and answers.
  bash "$(dirname "${BASH_SOURCE[0]}")/buildenv/multiplatform.sh" --print-env || true
}

# --- output helpers ---------------------------------------------------------
T_START=$SECONDS
# fd 3 = the caller's stdout (export lines only); everything else -> stderr.
exec 3>&1 1>&2

log() { printf '%s: [%3ds] %s\n' "$PROG" "$((SECONDS - T_START))" "$*" >&2; }
warn() { printf '%s: WARNING: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

readonly STEP_LOG_DIR=$LOG_DIR/fastapi-docker-offline-env

# run_logged LOGNAME CMD... : run a command with its output in a log file;
# on failure show the tail of the log and die.
run_logged() {
  local name=$1; shift
  local logf=$STEP_LOG_DIR/$name.log
  mkdir -p "$STEP_LOG_DIR"
  if ! "$@" >"$logf" 2>&1 </dev/null; then
    printf '%s: ---- last lines of %s ----\n' "$PROG" "$logf" >&2
    tail -n 25 "$logf" | sed "s/^/$PROG:   /" >&2
    die "command failed: $* (full log: $logf)"
  fi
}

# --- mode -------------------------------------------------------------------
MODE=provision
case "${1:-}" in
  "") ;;
  -h|--help) usage >&3; exit 0 ;;
  --print-env) print_env >&3; exit 0 ;;
  --check) MODE=check ;;
  *) usage >&2; die "unknown argument: $1" ;;
esac
[[ $# -le 1 ]] || die "at most one option expected"

[[ $MIRROR_PORT =~ ^[0-9]+$ ]] || die "OFFLINE_ENV_MIRROR_PORT must be a number, got '$MIRROR_PORT'"
[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts dockerd)"

CHECK_FAILED=0
missing() {  # in --check mode: note a problem and continue
  log "MISSING: $*"
  CHECK_FAILED=1
}

mkdir -p "$STATE_DIR" "$CACHE_DIR" "$STEP_LOG_DIR"
# One provisioning at a time (tests may call us concurrently).
# Daemons we start must not inherit fd 9 (lock) nor fd 3 (caller's stdout).
exec 9>"$STATE_DIR/offline-env.lock"
if ! flock -n 9; then
  log "another offline-env run holds $STATE_DIR/offline-env.lock; waiting (max 900 s)"
  flock -w 900 9 || die "timed out waiting for the lock $STATE_DIR/offline-env.lock"
fi

if [[ -r /etc/os-release ]]; then
  # shellcheck disable=SC1091
  . /etc/os-release
  [[ ${VERSION_CODENAME:-} == bookworm ]] ||
    warn "made for Debian bookworm; this is '${PRETTY_NAME:-unknown}' - continuing"
fi

# ---------------------------------------------------------------------------
# 1. Debian packages from bookworm: the tools, and what trixie's engine .debs depend on
#    (runc, iptables, tini ... of bookworm satisfy them).
APT_UPDATED=0
apt_update_once() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    run_logged apt-update apt-get update
    APT_UPDATED=1
  fi
}

pkg_installed() {
  [[ $(dpkg-query -W -f '${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

ensure_apt_packages() {
  local want=(debootstrap curl ca-certificates xz-utils runc iptables tini adduser libsystemd0)
  local missing_pkgs=() p
  for p in "${want[@]}"; do pkg_installed "$p" || missing_pkgs+=("$p"); done
  if [[ ${#missing_pkgs[@]} -eq 0 ]]; then
    log "packages present: ${want[*]}"
    return
  fi
  if [[ $MODE == check ]]; then missing "Debian packages: ${missing_pkgs[*]}"; return; fi
  apt_update_once
  log "apt-get install ${missing_pkgs[*]}"
  run_logged apt-install env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing_pkgs[@]}"
}

# ---------------------------------------------------------------------------
# 2. Docker engine
docker_answers() { timeout 10 docker info >/dev/null 2>&1; }

server_version() { docker version -f '{{.Server.Version}}' 2>/dev/null || true; }

ensure_dockerd() {
  command -v docker >/dev/null || die "no docker client on PATH"
  if [[ $MODE != check ]] && docker_answers &&
     dpkg --compare-versions "$(server_version)" lt "$ENGINE_MIN"; then
    stop_old_dockerd  # still the engine from before the upgrade
  fi
  if docker_answers; then
    log "docker engine answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
  elif [[ $MODE == check ]]; then
    missing "docker engine does not answer"; return
  else
    command -v dockerd >/dev/null || die "dockerd not found (is docker.io installed?)"
    if pgrep -x dockerd >/dev/null; then
      log "a dockerd process exists but does not answer yet; waiting for it"
    else
      local args=()
      [[ -n ${OFFLINE_ENV_STORAGE_DRIVER:-} ]] && args+=(--storage-driver "$OFFLINE_ENV_STORAGE_DRIVER")
      log "starting dockerd in the background (log: $DOCKERD_LOG)"
      rm -f /var/run/docker.pid
      # setsid+nohup: survives our exit; closed fds 3/9 so `$(...)` callers and
      # the lock are not held by the daemon.
      nohup setsid dockerd "${args[@]}" >>"$DOCKERD_LOG" 2>&1 </dev/null 3>&- 9>&- &
    fi
    local deadline=$((SECONDS + DOCKERD_TIMEOUT))
    until docker_answers; do
      if ((SECONDS >= deadline)); then
        tail -n 20 "$DOCKERD_LOG" 2>/dev/null | sed "s/^/$PROG:   dockerd: /" >&2 || true
        die "dockerd did not answer 'docker info' within ${DOCKERD_TIMEOUT}s (log: $DOCKERD_LOG)"
      fi
      if ! pgrep -x dockerd >/dev/null; then
        tail -n 20 "$DOCKERD_LOG" 2>/dev/null | sed "s/^/$PROG:   dockerd: /" >&2 || true
        die "dockerd exited during start-up (log: $DOCKERD_LOG)"
      fi
      sleep 1
    done
    log "docker engine up ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
  fi
  local drv
  drv=$(docker info -f '{{.Driver}}' 2>/dev/null || echo '?')
  case $drv in
    overlay2) log "storage driver: overlay2" ;;
    vfs) warn "storage driver fell back to vfs: every layer is a full copy (slow, large); see $DOCKERD_LOG" ;;
    *) warn "storage driver is '$drv' (overlay2 expected)" ;;
  esac
}

# ---------------------------------------------------------------------------
# 3. The engine, its CLI and the buildx + compose v2 plugins from trixie, without making
#    trixie an apt source of the system: a separate sources list, lists dir and cache.
readonly TRIXIE_APT_DIR=$STATE_DIR/apt-trixie
readonly ENGINE_DEBS=(docker.io containerd docker-cli docker-buildx docker-compose)
readonly ENGINE_MIN=26.1
trixie_apt() {
  apt-get \
    -o Dir::Etc::sourcelist="$TRIXIE_APT_DIR/sources.list" \
    -o Dir::Etc::sourceparts=- \
    -o Dir::State::lists="$TRIXIE_APT_DIR/lists" \
    -o Dir::Cache="$TRIXIE_APT_DIR/cache" \
    -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" \
    -o APT::Sandbox::User=root \
    "$@"
}

engine_debs_current() {
  local p
  for p in "${ENGINE_DEBS[@]}"; do pkg_installed "$p" || return 1; done
  dpkg --compare-versions "$(dpkg-query -W -f '${Version}' docker.io)" ge "$ENGINE_MIN"
}

stop_old_dockerd() {  # an engine older than ENGINE_MIN may be running: it goes before the upgrade
  pgrep -x dockerd >/dev/null || return 0
  log "stopping the running dockerd $(docker version -f '{{.Server.Version}}' 2>/dev/null || true) before the upgrade"
  pkill -x dockerd || true
  local deadline=$((SECONDS + 30))
  while pgrep -x dockerd >/dev/null; do
    ((SECONDS < deadline)) || { pkill -9 -x dockerd || true; sleep 1; break; }
    sleep 0.5
  done
  pkill -x containerd || true
}

ensure_engine_debs() {
  if engine_debs_current && docker buildx version >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    log "engine packages present: docker.io $(dpkg-query -W -f '${Version}' docker.io), containerd $(dpkg-query -W -f '${Version}' containerd), $(docker buildx version | awk '{print "buildx", $2}'), compose $(docker compose version --short)"
    return
  fi
  if [[ $MODE == check ]]; then missing "trixie engine packages (${ENGINE_DEBS[*]}, docker.io >= $ENGINE_MIN)"; return; fi
  log "fetching ${ENGINE_DEBS[*]} .debs from trixie (separate apt dir $TRIXIE_APT_DIR)"
  mkdir -p "$TRIXIE_APT_DIR/lists/partial" "$TRIXIE_APT_DIR/cache/archives/partial"
  rm -rf "$TRIXIE_APT_DIR/debs"
  mkdir -p "$TRIXIE_APT_DIR/debs"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s trixie main\n' \
    "$DEBIAN_MIRROR" >"$TRIXIE_APT_DIR/sources.list"
  run_logged apt-trixie-update trixie_apt update
  (cd "$TRIXIE_APT_DIR/debs" && run_logged apt-trixie-download trixie_apt download "${ENGINE_DEBS[@]}")
  stop_old_dockerd
  log "dpkg -i $(cd "$TRIXIE_APT_DIR/debs" && echo *.deb)"
  # policy-rc.d-less containers: the packages' service start is refused; we start dockerd below.
  run_logged dpkg-engine env DEBIAN_FRONTEND=noninteractive dpkg -i "$TRIXIE_APT_DIR"/debs/*.deb
  docker buildx version >/dev/null 2>&1 || die "'docker buildx version' fails after installing docker-buildx"
  docker compose version >/dev/null 2>&1 || die "'docker compose version' fails after installing docker-compose"
  log "engine packages installed: docker.io $(dpkg-query -W -f '${Version}' docker.io), $(docker buildx version | awk '{print "buildx", $2}'), compose $(docker compose version --short)"
}

# ---------------------------------------------------------------------------
# 4. PyPI pull-through mirror (devpi-server in its own venv)
mirror_answers() {
  curl -fsS --max-time 5 -o /dev/null "http://${MIRROR_HOST}:${MIRROR_PORT}/+api" 2>/dev/null
}

ensure_devpi_installed() {
  local have=""
  if [[ -x $DEVPI_VENV/bin/devpi-server ]]; then
    have=$("$DEVPI_VENV/bin/devpi-server" --version 2>/dev/null || true)
  fi
  if [[ $have == "$DEVPI_VERSION" ]]; then
    log "devpi-server $DEVPI_VERSION present in $DEVPI_VENV"
    return
  fi
  if [[ $MODE == check ]]; then missing "devpi-server $DEVPI_VERSION in $DEVPI_VENV"; return; fi
  local py
  py=$(command -v python3 || true)
  if [[ -z $py ]] || ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
      py=/usr/bin/python3
    else
      apt_update_once
      run_logged apt-install-venv env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends python3-venv
      py=/usr/bin/python3
    fi
  fi
  log "installing devpi-server==$DEVPI_VERSION into $DEVPI_VENV (python: $py)"
  rm -rf "$DEVPI_VENV"
  mkdir -p "$(dirname "$DEVPI_VENV")"
  run_logged devpi-venv "$py" -m venv "$DEVPI_VENV"
  run_logged devpi-pip "$DEVPI_VENV/bin/python" -m pip install --disable-pip-version-check \
    "devpi-server==$DEVPI_VERSION"
  have=$("$DEVPI_VENV/bin/devpi-server" --version 2>/dev/null || true)
  [[ $have == "$DEVPI_VERSION" ]] || die "devpi-server --version says '$have', expected $DEVPI_VERSION"
}

ensure_mirror() {
  ensure_devpi_installed
  if mirror_answers; then
    log "mirror answers on ${MIRROR_HOST}:${MIRROR_PORT}"
  elif [[ $MODE == check ]]; then
    missing "PyPI mirror on ${MIRROR_HOST}:${MIRROR_PORT}"; return
  else
    if [[ ! -e $DEVPI_SERVERDIR/.serverversion ]]; then
      log "initialising devpi server dir $DEVPI_SERVERDIR"
      mkdir -p "$DEVPI_SERVERDIR"
      run_logged devpi-init "$DEVPI_VENV/bin/devpi-init" --serverdir "$DEVPI_SERVERDIR"
    fi
    if ss -Hltn "sport = :$MIRROR_PORT" 2>/dev/null | grep -q .; then
      die "port $MIRROR_PORT is taken by something that is not answering like devpi (set OFFLINE_ENV_MIRROR_PORT)"
    fi
    log "starting devpi-server on ${MIRROR_HOST}:${MIRROR_PORT} (log: $DEVPI_LOG)"
    local ca_env=()
    if [[ -r $CA_BUNDLE ]]; then
      ca_env=(SSL_CERT_FILE="$CA_BUNDLE" REQUESTS_CA_BUNDLE="$CA_BUNDLE")
    fi
    # fds 3/9 closed on the whole background job (see dockerd above).
    (cd / && exec nohup setsid env "${ca_env[@]}" "$DEVPI_VENV/bin/devpi-server" \
      --serverdir "$DEVPI_SERVERDIR" --host "$MIRROR_HOST" --port "$MIRROR_PORT") \
      >>"$DEVPI_LOG" 2>&1 </dev/null 3>&- 9>&- &
    local deadline=$((SECONDS + MIRROR_TIMEOUT))
    until mirror_answers; do
      if ((SECONDS >= deadline)); then
        tail -n 20 "$DEVPI_LOG" | sed "s/^/$PROG:   devpi: /" >&2 || true
        die "devpi-server did not answer on port $MIRROR_PORT within ${MIRROR_TIMEOUT}s (log: $DEVPI_LOG)"
      fi
      sleep 0.5
    done
    log "mirror up"
  fi
  # Ask PyPI only for the projects that are requested: without this, devpi's
  # first lookup downloads PyPI's whole project-name list (~15 s, large).
  local base="http://${MIRROR_HOST}:${MIRROR_PORT}/root/pypi" cfg
  cfg=$(curl -fsS --max-time 10 "$base?no_projects=") || die "cannot read devpi index config $base"
  if ! grep -Eq '"mirror_no_project_list": *true' <<<"$cfg"; then
    if [[ $MODE == check ]]; then missing "root/pypi mirror_no_project_list=True"; return; fi
    log "configuring root/pypi: mirror_no_project_list=True"
    curl -fsS --max-time 10 -u root: -X PATCH -H 'Content-Type: application/json' \
      -d '["mirror_no_project_list=True"]' "$base" >/dev/null ||
      die "could not set mirror_no_project_list on $base (root password changed?)"
  fi
  # Upstream check (also warms the mirror): a real project page through PyPI.
  if ! curl -fsS --max-time "$MIRROR_TIMEOUT" -o /dev/null "${INDEX_URL}pip/"; then
    tail -n 20 "$DEVPI_LOG" | sed "s/^/$PROG:   devpi: /" >&2 || true
    if [[ $MODE == check ]]; then missing "mirror cannot serve ${INDEX_URL}pip/"; return; fi
    die "mirror answers but cannot serve ${INDEX_URL}pip/ (PyPI unreachable through it? CA bundle: $CA_BUNDLE; log: $DEVPI_LOG)"
  fi
  log "mirror serves PyPI projects: $INDEX_URL"
}

# ---------------------------------------------------------------------------
# 5. Stand-in base images.  Everything that shapes an image's content lives in
#    the functions/values hashed by recipe_text(): change them and the images
#    are rebuilt on the next run; anything else (logging, comments) is not.

spec_field() {  # spec_field SPEC N  (1=key 2=release 3=flavour 4=tag 5=aliases)
  local IFS='|' f
  read -r -a f <<<"$1"
  printf '%s' "${f[$(($2 - 1))]:-}"
}

slim_includes() {  # slim_includes RELEASE : debootstrap --include list
  local extra_var="SLIM_INCLUDE_$1"
  printf '%s%s' "$SLIM_INCLUDE" "${!extra_var:+,${!extra_var}}"
}

includes_for() {  # includes_for RELEASE FLAVOUR
  case $2 in
    slim) slim_includes "$1" ;;
    full) printf '%s,%s' "$(slim_includes "$1")" "$FULL_EXTRA" ;;
    *) die "unknown flavour $2" ;;
  esac
}

# in_root DIR CMD... : run CMD inside the rootfs with a clean environment
# (the host's PIP_*, SSL_* etc. must not leak into the image's tools).
in_root() {
  local dir=$1; shift
  chroot "$dir" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
    PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# adapt_rootfs DIR RELEASE FLAVOUR: make Debian's python look like the
# official python image's layout, enough for its Dockerfiles to build unchanged.
adapt_rootfs() {
  local dir=$1 release=$2 flavour=$3 f
  # Never touch the host: DIR must be a debootstrapped tree, not /.
  [[ -n $dir && $(readlink -f "$dir") != / && -f $dir/etc/debian_version ]] ||
    die "adapt_rootfs: refusing to work on '$dir'"
  # pip may install system-wide, like in the official image (PEP 668 marker).
  rm -f "$dir"/usr/lib/python3*/EXTERNALLY-MANAGED
  # python / pip (and python3 / pip3) in /usr/local/bin, as in the official image.
  mkdir -p "$dir/usr/local/bin"
  ln -sfn /usr/bin/python3 "$dir/usr/local/bin/python"
  ln -sfn /usr/bin/python3 "$dir/usr/local/bin/python3"
  # pip (+ setuptools before 3.12, like the official image) into /usr/local,
  # from the wheels Debian bundles for venv; gives /usr/local/bin/pip, pip3, pip3.X.
  local wheels=/usr/share/python-wheels pipwhl pkgs=(pip)
  pipwhl=$(compgen -G "$dir$wheels/pip-*.whl" | head -n1 || true)
  [[ -n $pipwhl ]] || die "stand-in rootfs $dir: no pip wheel in $wheels (python3-venv missing?)"
  pipwhl=${pipwhl##*/}
  if in_root "$dir" /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info >= (3, 12))'; then
    pkgs+=(setuptools)
  fi
  in_root "$dir" /usr/bin/python3 "$wheels/$pipwhl/pip" install --no-index --find-links "$wheels" \
    --no-cache-dir --disable-pip-version-check --root-user-action=ignore --no-warn-script-location \
    "${pkgs[@]}" >/dev/null || die "stand-in rootfs $dir: installing ${pkgs[*]} from $wheels failed"
  [[ -x $dir/usr/local/bin/pip ]] || die "stand-in rootfs $dir: /usr/local/bin/pip missing after install"
  # Official images install into /usr/local/lib/pythonX.Y/site-packages; Debian's
  # python uses .../dist-packages there. Alias the official path, so Dockerfiles
  # that COPY --from=build /usr/local/lib/pythonX.Y/site-packages still work.
  local pydir v
  for pydir in "$dir"/usr/lib/python3.[0-9]*; do
    [[ -d $pydir ]] || continue
    v=${pydir##*/}
    mkdir -p "$dir/usr/local/lib/$v/dist-packages"
    ln -sfn dist-packages "$dir/usr/local/lib/$v/site-packages"
  done
  if [[ -x $dir/usr/bin/python3-config ]]; then
    ln -sfn /usr/bin/python3-config "$dir/usr/local/bin/python-config"
  fi
  # apt sources as in the official debian images (deb822), incl. security.
  rm -f "$dir/etc/apt/sources.list"
  mkdir -p "$dir/etc/apt/sources.list.d"
  cat >"$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $release $release-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $release-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # apt cleans its caches after installs, like the official debian images.
  cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  printf 'APT::Install-Recommends "false";\n' >"$dir/etc/apt/apt.conf.d/docker-no-recommends"
  if [[ $flavour == slim ]]; then
    # Like debian:*-slim: no docs/man/locales, now or for later installs.
    mkdir -p "$dir/etc/dpkg/dpkg.cfg.d"
    cat >"$dir/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
    find "$dir/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete 2>/dev/null || true
    find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    for f in groff info linda lintian/overrides locale man; do
      if [[ -d $dir/usr/share/$f ]]; then find "$dir/usr/share/$f" -mindepth 1 -delete; fi
    done
    # python bytecode of the stdlib is regenerated on demand; drop test suites.
    rm -rf "$dir"/usr/lib/python3*/test "$dir"/usr/lib/python3*/*/test
  fi
  # Keep the image small and host-neutral.
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb \
    "$dir"/var/cache/apt/archives/partial/* "$dir"/var/cache/apt/*.bin \
    "$dir"/var/cache/debconf/*-old "$dir"/var/lib/dpkg/*-old \
    "$dir"/var/log/*.log "$dir"/var/log/apt/* "$dir"/tmp/* "$dir"/var/tmp/* \
    "$dir"/root/.cache "${dir:?}"/dev/*
  mkdir -p "$dir/var/lib/apt/lists/partial" "$dir/var/cache/apt/archives/partial"
  : >"$dir/etc/resolv.conf"
  : >"$dir/etc/hostname"
  if [[ -e $dir/etc/machine-id ]]; then : >"$dir/etc/machine-id"; fi
  # Sanity: what Dockerfiles for the official image rely on.
  local tool
  for tool in bash useradd groupadd python python3 pip; do
    in_root "$dir" sh -c "command -v $tool" >/dev/null || die "stand-in rootfs $dir lacks '$tool'"
  done
  in_root "$dir" /usr/bin/python3 -c 'import ssl, sqlite3, venv, ensurepip' ||
    die "stand-in rootfs $dir: python3 lacks ssl/sqlite3/venv/ensurepip"
  in_root "$dir" /usr/bin/python3 -c 'import pip, sys; assert pip.__file__.startswith("/usr/local/lib/"), pip.__file__' ||
    die "stand-in rootfs $dir: pip does not run from /usr/local"
  in_root "$dir" /usr/bin/python3 -c 'import sys, sysconfig; p = sysconfig.get_path("purelib"); assert p.startswith("/usr/local/lib/") and p in sys.path, p' ||
    die "stand-in rootfs $dir: pip's install dir is not /usr/local/lib/... on sys.path"
}

import_changes() {  # import_changes PYTHON_VERSION : docker import --change args
  printf '%s\n' \
    "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "ENV LANG=C.UTF-8" \
    "ENV PYTHON_VERSION=$1" \
    'CMD ["python3"]'
}

recipe_text() {  # recipe_text SPEC : everything that determines the image
  local spec=$1
  printf 'recipe-version=%s\nspec=%s\nmirror=%s\nincludes=%s\n' \
    "$RECIPE_VERSION" "$spec" "$DEBIAN_MIRROR" "$(includes_for "$(spec_field "$spec" 2)" "$(spec_field "$spec" 3)")"
  declare -f in_root adapt_rootfs import_changes make_base_rootfs derive_full finish_image
}

recipe_hash() { recipe_text "$1" | sha256sum | cut -c1-16; }

image_label() {  # image_label REF LABEL
  docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

spec_selected() {
  local spec=$1 tok key release flavour tag aliases
  key=$(spec_field "$spec" 1); release=$(spec_field "$spec" 2)
  flavour=$(spec_field "$spec" 3); tag=$(spec_field "$spec" 4); aliases=$(spec_field "$spec" 5)
  for tok in ${IMAGES_SELECTION//,/ }; do
    case $tok in
      all|"$key"|"$release"|"$flavour"|"$tag") return 0 ;;
    esac
    [[ " $aliases " == *" $tok "* ]] && return 0
  done
  return 1
}

validate_selection() {
  local tok spec ok
  for tok in ${IMAGES_SELECTION//,/ }; do
    [[ $tok == none ]] && continue
    ok=0
    for spec in "${IMAGE_SPECS[@]}"; do
      case $tok in all|slim|full|bookworm|trixie) ok=1 ;; esac
      [[ $tok == "$(spec_field "$spec" 1)" || $tok == "$(spec_field "$spec" 4)" ||
         " $(spec_field "$spec" 5) " == *" $tok "* ]] && ok=1
    done
    [[ $ok -eq 1 ]] || die "OFFLINE_ENV_IMAGES: unknown token '$tok' (use all, none, slim, full, bookworm, trixie or a tag)"
  done
}

# image_current SPEC : 0 if the primary tag has the current recipe label and
# every alias points at the same image.
image_current() {
  local spec=$1 tag aliases a id
  tag=$(spec_field "$spec" 4); aliases=$(spec_field "$spec" 5)
  [[ $(image_label "$tag" "$LABEL_RECIPE") == "$(recipe_hash "$spec")" ]] || return 1
  id=$(image_id "$tag")
  for a in $aliases; do [[ $(image_id "$a") == "$id" ]] || return 1; done
  return 0
}

# Only retagging is needed when the primary is current but an alias is not.
fix_aliases() {
  local spec=$1 tag a
  tag=$(spec_field "$spec" 4)
  for a in $(spec_field "$spec" 5); do
    if [[ $(image_id "$a") != "$(image_id "$tag")" ]]; then
      log "[$(spec_field "$spec" 1)] tagging $a -> $tag"
      docker tag "$tag" "$a"
    fi
  done
}

umount_under() {  # unmount anything debootstrap may have left mounted in DIR
  local dir=$1 m
  [[ -d $dir ]] || return 0
  dir=$(readlink -f "$dir")
  awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r |
    while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done
}

remove_rootfs() {
  local dir=$1
  [[ -d $dir ]] || return 0
  umount_under "$dir"
  rm -rf --one-file-system "$dir"
}

# make_base_rootfs RELEASE DIR : debootstrap minbase + the slim packages.
make_base_rootfs() {
  local release=$1 dir=$2 cache=$CACHE_DIR/debootstrap/$1
  remove_rootfs "$dir"
  mkdir -p "$dir" "$cache"
  log "[$release] debootstrap --variant=minbase --include=$(slim_includes "$release") $release (log: $STEP_LOG_DIR/debootstrap-$release.log)"
  run_logged "debootstrap-$release" debootstrap --variant=minbase --cache-dir="$cache" \
    --include="$(slim_includes "$release")" "$release" "$dir" "$DEBIAN_MIRROR"
  umount_under "$dir"
}

# derive_full DIR KEY : DIR is a copy of the (unadapted) base rootfs, which
# still has debootstrap's apt lists; add compilers and dev tools with apt in
# a chroot (same result as debootstrap --include=..., at a third of the time).
derive_full() {
  local dir=$1 key=$2
  cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
  log "[$key] apt-get install ${FULL_EXTRA//,/ } (in chroot; log: $STEP_LOG_DIR/apt-$key.log)"
  run_logged "apt-$key" in_root "$dir" DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${FULL_EXTRA//,/ }
  umount_under "$dir"
}

# finish_image SPEC DIR : adapt DIR, docker import it (+ alias tags), remove DIR.
finish_image() {
  local spec=$1 dir=$2 key release flavour tag aliases hash pyver old_ids a size new_id
  key=$(spec_field "$spec" 1); release=$(spec_field "$spec" 2)
  flavour=$(spec_field "$spec" 3); tag=$(spec_field "$spec" 4); aliases=$(spec_field "$spec" 5)
  hash=$(recipe_hash "$spec")
  old_ids=$(for a in "$tag" $aliases; do image_id "$a"; done | sort -u)
  adapt_rootfs "$dir" "$release" "$flavour"
  pyver=$(in_root "$dir" /usr/bin/python3 -c 'import platform; print(platform.python_version())')
  local changes=() c
  while IFS= read -r c; do changes+=(--change "$c"); done < <(import_changes "$pyver")
  changes+=(--change "LABEL $LABEL_RECIPE=$hash"
            --change "LABEL org.fastapi-docker.standin=$release-$flavour")
  log "[$key] docker import -> $tag (python $pyver)"
  tar --numeric-owner -C "$dir" -c . |
    docker import "${changes[@]}" -m "fastapi-docker offline stand-in ($release $flavour, recipe $hash)" - "$tag" >/dev/null ||
    die "[$key] docker import of $dir failed"
  for a in $aliases; do docker tag "$tag" "$a"; done
  remove_rootfs "$dir"
  # Drop the superseded image(s) if nothing else uses them.
  new_id=$(image_id "$tag")
  for a in $old_ids; do
    [[ $a == "$new_id" ]] || docker image rm "$a" >/dev/null 2>&1 || true
  done
  size=$(docker image inspect -f '{{.Size}}' "$tag")
  log "[$key] done: $tag${aliases:+ (+ $aliases)}, $((size / 1000000)) MB"
}

# build_release RELEASE SPEC... : one debootstrap, then the slim and/or full
# image of that release from it.
build_release() {
  local release=$1; shift
  local spec slim_spec="" full_spec="" t0=$SECONDS
  local base=$STATE_DIR/rootfs/$release-slim full=$STATE_DIR/rootfs/$release-full
  for spec in "$@"; do
    case $(spec_field "$spec" 3) in
      slim) slim_spec=$spec ;;
      full) full_spec=$spec ;;
    esac
  done
  make_base_rootfs "$release" "$base"
  if [[ -n $full_spec ]]; then
    remove_rootfs "$full"
    cp -a "$base" "$full"
  fi
  if [[ -n $slim_spec ]]; then finish_image "$slim_spec" "$base"; else remove_rootfs "$base"; fi
  if [[ -n $full_spec ]]; then
    derive_full "$full" "$(spec_field "$full_spec" 1)"
    finish_image "$full_spec" "$full"
  fi
  log "[$release] image(s) built in $((SECONDS - t0))s"
}

ensure_images() {
  validate_selection
  local spec key todo=() releases=() r
  for spec in "${IMAGE_SPECS[@]}"; do
    spec_selected "$spec" || continue
    key=$(spec_field "$spec" 1)
    if [[ $FORCE_REBUILD != 1 ]] && image_current "$spec"; then
      if [[ $MODE == check ]]; then
        log "[$key] $(spec_field "$spec" 4) current"
      else
        fix_aliases "$spec"
        log "[$key] $(spec_field "$spec" 4) is current (recipe $(recipe_hash "$spec")); skipping"
      fi
      continue
    fi
    if [[ $MODE == check ]]; then
      missing "image $(spec_field "$spec" 4) (absent, or recipe changed)"
      continue
    fi
    # An image of the right recipe but with a stale alias needs no rebuild.
    if [[ $FORCE_REBUILD != 1 && $(image_label "$(spec_field "$spec" 4)" "$LABEL_RECIPE") == "$(recipe_hash "$spec")" ]]; then
      fix_aliases "$spec"; continue
    fi
    todo+=("$spec")
  done
  [[ ${#todo[@]} -gt 0 ]] || return 0

  # Group by release and build the groups in parallel; slim and full of one
  # release come from one debootstrap.
  for spec in "${todo[@]}"; do
    r=$(spec_field "$spec" 2)
    [[ " ${releases[*]-} " == *" $r "* ]] || releases+=("$r")
  done
  log "building ${#todo[@]} stand-in image(s) for: ${releases[*]} (releases in parallel, ~1-2 min)"
  local pids=() names=() i rc=0
  for r in "${releases[@]}"; do
    (
      trap - EXIT  # the parent's cleanup must not run when one group ends
      specs=()
      for spec in "${todo[@]}"; do
        if [[ $(spec_field "$spec" 2) == "$r" ]]; then specs+=("$spec"); fi
      done
      build_release "$r" "${specs[@]}"
    ) &
    pids+=($!); names+=("$r")
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      warn "building the ${names[$i]} image(s) failed (see messages above)"
      rc=1
    fi
  done
  [[ $rc -eq 0 ]] || die "stand-in image build failed"
}

cleanup() {  # on any exit: no mounts or half-built trees left behind
  local d
  for d in "$STATE_DIR"/rootfs/*; do
    if [[ -d $d ]]; then remove_rootfs "$d" || true; fi
  done
  return 0
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
summary() {
  local spec tag a line
  log "---------------------------------------------------------------- summary"
  log "docker engine : $(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?') (storage driver $(docker info -f '{{.Driver}}' 2>/dev/null || echo '?')), client $(docker version -f '{{.Client.Version}}' 2>/dev/null || echo '?') at $(command -v docker)"
  log "buildx        : $(docker buildx version 2>/dev/null | awk '{print $2}' || echo missing)"
  log "compose       : $(docker compose version --short 2>/dev/null || echo missing)"
  log "PyPI mirror   : $INDEX_URL (devpi-server $DEVPI_VERSION, data $DEVPI_SERVERDIR)"
  for spec in "${IMAGE_SPECS[@]}"; do
    tag=$(spec_field "$spec" 4)
    if [[ -n $(image_id "$tag") ]]; then
      line=$(docker image inspect -f '{{.Size}} {{ index .Config.Labels "'"$LABEL_RECIPE"'" }}' "$tag")
      log "image         : $tag $(spec_field "$spec" 5) - $(( ${line%% *} / 1000000 )) MB, recipe ${line#* }"
    else
      log "image         : $tag - not built"
    fi
  done
  log "done in $((SECONDS - T_START))s; builds: --network host, index $INDEX_URL"
}

ensure_apt_packages
ensure_engine_debs
if [[ $MODE == check ]] && ! engine_debs_current; then
  missing "docker engine"
else
  ensure_dockerd
fi
ensure_mirror
if [[ $MODE == check ]] && ! docker_answers; then
  :
else
  ensure_images
fi

if [[ $MODE == check ]]; then
  if [[ $CHECK_FAILED -ne 0 ]]; then
    log "check: NOT ready (run as root: bash scripts/offline-env.sh)"
    exit 1
  fi
  log "check: ready"
  print_env >&3
  exit 0
fi

summary
bash "$(dirname "${BASH_SOURCE[0]}")/buildenv/postgres.sh" >/dev/null || die "no postgres:17 stand-in (see above): the database tests cannot run"
bash "$(dirname "${BASH_SOURCE[0]}")/buildenv/multiplatform.sh" >/dev/null || warn "no multi-platform builder (see above): tests/test_multiplatform.py cannot run"
print_env >&3
