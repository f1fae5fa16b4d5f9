#!/usr/bin/env bash
# buildenv/env.sh - make this machine (Debian bookworm, as root) the offline Docker build environment of the
# template's tests: engine.sh, mirror.sh, images.sh, multiplatform.sh, nodes.sh, each left alone where it is in place.
#   eval "$(bash scripts/buildenv/env.sh)"     provision what is missing, export the environment
#   bash scripts/buildenv/env.sh --print-env   only print the export lines (no root, no changes)
# stdout carries only `export NAME=value` lines; progress and errors go to stderr; failure exits non-zero.
# Logs: /var/log/{dockerd,devpi}-offline-env.log, /var/log/fastapi-docker-offline-env/; why each part: README.md
set -euo pipefail
readonly PROG=buildenv
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
# shellcheck source=engine.sh
source "$HERE/engine.sh"
# shellcheck source=mirror.sh
source "$HERE/mirror.sh"
# shellcheck source=images.sh
source "$HERE/images.sh"

print_env() {
  printf 'export FASTAPI_DOCKER_INDEX_URL=%s\nexport FASTAPI_DOCKER_BUILD_NETWORK=host\n' "$INDEX_URL"  # host: the mirror's
  if [[ -z ${SSL_CERT_FILE:-} && -r $CA_BUNDLE ]]; then printf 'export SSL_CERT_FILE=%s\n' "$CA_BUNDLE"; fi  # for uv
  bash "$HERE/multiplatform.sh" --print-env || true
  bash "$HERE/nodes.sh" --print-env || true
}

case ${1:-} in
  "") ;;
  --print-env) print_env; exit 0 ;;
  -h | --help) sed -n '2,/^set/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) die "unknown argument '$1' (see --help)" ;;
esac
[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons)"
exec 3>&1 1>&2  # fd 3: the caller's stdout, for the export lines only
take_lock
trap 'remove_rootfs "$STATE_DIR/rootfs"' EXIT  # no mounts or half-built trees left behind
grep -qsx 'VERSION_CODENAME=bookworm' /etc/os-release || warn "made for Debian bookworm; continuing"
ensure_engine
ensure_mirror
ensure_images
bash "$HERE/multiplatform.sh" >/dev/null || warn "no multi-platform builder (see above): its test cannot run"
bash "$HERE/nodes.sh" >/dev/null || warn "no Swarm worker engine (see above): the multi-node Swarm test cannot run"
log "ready; builds use --network host and the index $INDEX_URL"
print_env >&3
