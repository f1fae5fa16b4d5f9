#!/usr/bin/env bash
# buildenv/multiplatform.sh - a BuildKit builder for linux/amd64 AND linux/arm64 images on this amd64 machine,
# beside the shared main engine (README.md says how); env.sh runs it after the other parts.
# Usage: bash scripts/buildenv/multiplatform.sh [--print-env]
#   stdout carries only `export` lines (with --print-env: only if the builder answers; no changes).
set -euo pipefail
readonly PROG=multiplatform
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
# shellcheck source=images.sh
source "$HERE/images.sh"
readonly CONTEXT=multiplatform SOCKET=/run/docker-multiplatform.sock
readonly DOCKERD_ROOT=/var/lib/docker-multiplatform DOCKERD_EXEC_ROOT=/run/docker-multiplatform
readonly DOCKERD_CONFIG=$STATE_DIR/dockerd-multiplatform.json DOCKERD_LOG=/var/log/dockerd-multiplatform.log
# Its own bridge: with --bridge=none, dockerd deletes the main engine's docker0 at start.
readonly BRIDGE=fd-multiplat0 BRIDGE_ADDR=172.31.254.1/24
readonly REGISTRY=127.0.0.1:5000 REGISTRY_DIR=$STATE_DIR/registry REGISTRY_CONFIG=$STATE_DIR/registry.yml
readonly REGISTRY_LOG=/var/log/registry-multiplatform.log
readonly BASE_TAG=${py313_slim[tags]%% *}  # python:3.13-slim-trixie, the default project's base image
readonly ARM64_TAG=${py313_slim_arm64[tags]}  # its arm64 twin, a stand-in of images.sh too

engine_answers() { timeout 10 docker -H "unix://$SOCKET" info >/dev/null 2>&1; }
registry_answers() { curl -fsS -o /dev/null --max-time 5 "http://$REGISTRY/v2/"; }

print_env() {
  if engine_answers && registry_answers && docker context inspect "$CONTEXT" >/dev/null 2>&1; then
    printf 'export FASTAPI_DOCKER_MULTIPLATFORM_CONTEXT=%s\n' "$CONTEXT"
    printf 'export FASTAPI_DOCKER_MULTIPLATFORM_REGISTRY=%s\n' "$REGISTRY"
  fi
}

ensure_registry() {
  registry_answers && return 0
  mkdir -p "$REGISTRY_DIR"
  cat >"$REGISTRY_CONFIG" <<EOF
{version: 0.1, log: {level: warn}, http: {addr: "$REGISTRY"},
 storage: {filesystem: {rootdirectory: "$REGISTRY_DIR"}, delete: {enabled: true}}}
EOF
  log "starting docker-registry on $REGISTRY (log: $REGISTRY_LOG)"
  daemon "$REGISTRY_LOG" docker-registry serve "$REGISTRY_CONFIG"
  wait_until "the registry on $REGISTRY" "$REGISTRY_LOG" registry_answers
}

ensure_engine() {
  if ! engine_answers; then
    mkdir -p "$DOCKERD_ROOT" "$DOCKERD_EXEC_ROOT"
    printf '{"features": {"containerd-snapshotter": true}, "registry-mirrors": ["http://%s"], "insecure-registries": ["%s"]}\n' \
      "$REGISTRY" "$REGISTRY" >"$DOCKERD_CONFIG"
    ip link show "$BRIDGE" >/dev/null 2>&1 ||
      { ip link add "$BRIDGE" type bridge; ip addr add "$BRIDGE_ADDR" dev "$BRIDGE"; ip link set "$BRIDGE" up; }
    log "starting a second dockerd on $SOCKET (containerd image store; log: $DOCKERD_LOG)"
    daemon "$DOCKERD_LOG" dockerd --config-file "$DOCKERD_CONFIG" --data-root "$DOCKERD_ROOT" \
      --exec-root "$DOCKERD_EXEC_ROOT" --pidfile /run/docker-multiplatform.pid -H "unix://$SOCKET" \
      --bridge="$BRIDGE" --iptables=false --ip6tables=false --ip-masq=false
    wait_until "the second dockerd on $SOCKET" "$DOCKERD_LOG" engine_answers
  fi
  docker context inspect "$CONTEXT" >/dev/null 2>&1 ||
    docker context create "$CONTEXT" --description "fastapi-docker multi-platform builder" --docker "host=unix://$SOCKET" >/dev/null
  local platforms
  platforms=$(docker --context "$CONTEXT" buildx inspect "$CONTEXT" 2>/dev/null | sed -n 's/^Platforms: *//p')
  [[ $platforms == *linux/arm64* ]] || die "the builder of context $CONTEXT lacks linux/arm64 (it has: $platforms)"
}

manifest() {  # manifest REPO:TAG : its raw manifest JSON in the loopback registry (or nothing)
  curl -fsS --max-time 10 -H 'Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json' \
    "http://$REGISTRY/v2/${1%:*}/manifests/${1##*:}" 2>/dev/null || true
}

push() {  # push IMAGE REF : the main engine's IMAGE as REF, unless REF is that image already (ID = config digest)
  local want
  want=$(docker image inspect -f '{{.Id}}' "$1" 2>/dev/null) || die "the main engine has no $1 (images.sh makes it)"
  [[ $(manifest "${2#*/}" | jq -r '.config.digest // empty' 2>/dev/null) != "$want" ]] || return 0
  log "pushing the main engine's $1 -> $2"
  docker tag "$1" "$2"
  docker push -q "$2" >/dev/null || die "docker push $2 failed"
  docker image rm "$2" >/dev/null
}

ensure_base_images() {
  local repo=library/${BASE_TAG%:*} tag=${BASE_TAG##*:} amd arm index
  amd=$REGISTRY/$repo:$tag-amd64 arm=$REGISTRY/$repo:$tag-arm64 index=$REGISTRY/$repo:$tag
  push "$BASE_TAG" "$amd"
  push "$ARM64_TAG" "$arm"
  # The index must name exactly the current two manifests.
  local d_amd d_arm have
  d_amd=$(manifest "${amd#*/}" | sha256sum | cut -d' ' -f1)
  d_arm=$(manifest "${arm#*/}" | sha256sum | cut -d' ' -f1)
  have=$(manifest "${index#*/}" | jq -r '[.manifests[]?.digest] | sort | join(" ")' 2>/dev/null || true)
  if [[ $have != "$(printf 'sha256:%s\n' "$d_amd" "$d_arm" | sort | paste -sd' ')" ]]; then
    log "index $index -> linux/amd64 + linux/arm64"
    run_logged imagetools docker buildx imagetools create -t "$index" "$amd" "$arm"
  fi
}

case ${1:-} in
  "") ;;
  --print-env) print_env; exit 0 ;;
  *) die "unknown argument: $1 (use no argument or --print-env)" ;;
esac
[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts a dockerd)"
exec 3>&1 1>&2  # fd 3: the caller's stdout, for the export lines only
take_lock
apt_install qemu-user-static binfmt-support docker-registry jq
ensure_binfmt
ensure_registry
ensure_engine
ensure_base_images
log "ready: docker --context $CONTEXT buildx build --platform linux/amd64,linux/arm64 (FROM docker.io/$BASE_TAG via $REGISTRY)"
print_env >&3
