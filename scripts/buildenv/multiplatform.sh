#!/usr/bin/env bash
# buildenv/multiplatform.sh - a BuildKit builder that can build linux/amd64 AND linux/arm64
# images on this (offline, amd64) build machine, for the multi-platform test of the image tier.
#
# The main engine uses the classic image store, whose BuildKit (`docker` driver) builds one
# platform only; it is shared and must not be reconfigured. So this adds, next to it:
#
#   * qemu-user-static + binfmt-support (Debian), aarch64 registered with the F (fix-binary)
#     flag, so arm64 binaries run inside containers too,
#   * a loopback registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1:5000,
#     holding the python:3.13-slim-trixie stand-in for both platforms as one multi-platform
#     index (no public registry is reachable, and BuildKit resolves FROM images in a registry),
#   * a second dockerd (own data-root, exec-root, socket, managed containerd, a bridge of its
#     own, no iptables) with the containerd image store, which can build multi-platform images,
#     with the loopback registry as its Docker Hub mirror, exposed as the docker context
#     `multiplatform`.
#
# The arm64 stand-in is made like offline-env.sh's amd64 one (debootstrap --arch=arm64, run
# through qemu, then offline-env.sh's own adapt_rootfs) and is rebuilt only when its recipe
# changes (a label holds the recipe hash). Idempotent: a second run checks and takes seconds.
#
# Usage: bash scripts/buildenv/multiplatform.sh [--print-env]
#   (none)       provision (root), then print the export lines.
#   --print-env  only print the export lines if the builder answers; change nothing.
# stdout carries only `export` lines; progress goes to stderr.
set -euo pipefail

readonly PROG=multiplatform
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly OFFLINE_ENV=$HERE/../offline-env.sh
readonly STATE_DIR=${OFFLINE_ENV_STATE_DIR:-/var/lib/fastapi-docker}
readonly CACHE_DIR=${OFFLINE_ENV_CACHE_DIR:-/var/cache/fastapi-docker}
readonly LOG_DIR=${OFFLINE_ENV_LOG_DIR:-/var/log}
readonly DEBIAN_MIRROR=${OFFLINE_ENV_DEBIAN_MIRROR:-http://deb.debian.org/debian}
readonly CONTEXT=multiplatform
readonly SOCKET=/run/docker-multiplatform.sock
readonly DOCKERD_ROOT=/var/lib/docker-multiplatform
readonly DOCKERD_EXEC_ROOT=/run/docker-multiplatform
readonly DOCKERD_CONFIG=$STATE_DIR/dockerd-multiplatform.json
readonly DOCKERD_LOG=$LOG_DIR/dockerd-multiplatform.log
readonly BRIDGE=fd-multiplat0
readonly BRIDGE_ADDR=172.31.254.1/24
readonly REGISTRY=127.0.0.1:5000
readonly REGISTRY_DIR=$STATE_DIR/registry
readonly REGISTRY_CONFIG=$STATE_DIR/registry.yml
readonly REGISTRY_LOG=$LOG_DIR/registry-multiplatform.log
readonly TIMEOUT=${OFFLINE_ENV_DOCKERD_TIMEOUT:-60}
# The base image of the default project, and the one stand-in made for arm64.
readonly BASE_TAG=python:3.13-slim-trixie
readonly RELEASE=trixie
readonly ARM_INCLUDE="python3,python3-venv,ca-certificates,netbase,tzdata"
readonly LABEL_RECIPE=org.fastapi-docker.standin-recipe
readonly RECIPE_VERSION=1

log() { printf '%s: [%3ds] %s\n' "$PROG" "$SECONDS" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

mp_docker() { docker -H "unix://$SOCKET" "$@"; }
engine_answers() { timeout 10 docker -H "unix://$SOCKET" info >/dev/null 2>&1; }
registry_answers() { curl -fsS -o /dev/null --max-time 5 "http://$REGISTRY/v2/"; }

print_env() {
  if engine_answers && registry_answers &&
     docker context inspect "$CONTEXT" >/dev/null 2>&1; then
    printf 'export FASTAPI_DOCKER_MULTIPLATFORM_CONTEXT=%s\n' "$CONTEXT"
    printf 'export FASTAPI_DOCKER_MULTIPLATFORM_REGISTRY=%s\n' "$REGISTRY"
  fi
}

case "${1:-}" in
  "") ;;
  --print-env) print_env; exit 0 ;;
  *) die "unknown argument: $1 (use no argument or --print-env)" ;;
esac
[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts a dockerd)"
exec 3>&1 1>&2  # fd 3: the caller's stdout, export lines only

wait_for() {  # wait_for WHAT CMD... : poll CMD until it succeeds, at most TIMEOUT s
  local what=$1 t=0; shift
  until "$@"; do
    ((t++ < TIMEOUT * 2)) || die "$what did not come up within ${TIMEOUT}s"
    sleep 0.5
  done
}

# --- 1. qemu for arm64 binaries, also inside containers --------------------
ensure_packages() {
  local p want=()
  for p in qemu-user-static binfmt-support docker-registry; do
    [[ $(dpkg-query -W -f '${Status}' "$p" 2>/dev/null || true) == "install ok installed" ]] || want+=("$p")
  done
  [[ ${#want[@]} -eq 0 ]] && return 0
  log "apt-get install ${want[*]}"
  apt-get update >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${want[@]}" >/dev/null ||
    die "apt-get install ${want[*]} failed"
}

ensure_binfmt() {
  local entry=/proc/sys/fs/binfmt_misc/qemu-aarch64
  if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
      die "cannot mount binfmt_misc (no CAP_SYS_ADMIN, or a kernel without CONFIG_BINFMT_MISC): arm64 binaries cannot run here"
  fi
  [[ -e $entry ]] || update-binfmts --enable qemu-aarch64 || die "update-binfmts --enable qemu-aarch64 failed"
  grep -qx enabled "$entry" || die "$entry is not enabled"
  # F: the kernel opens the interpreter at registration, so it also works in a container's
  # root filesystem, which has no /usr/libexec/qemu-binfmt.
  grep -q '^flags: .*F' "$entry" ||
    die "$entry lacks the F (fix-binary) flag: $(grep '^flags' "$entry"); arm64 RUN steps would fail in containers"
}

# --- 2. loopback registry ----------------------------------------------------
ensure_registry() {
  registry_answers && return 0
  mkdir -p "$REGISTRY_DIR"
  cat >"$REGISTRY_CONFIG" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
  log "starting docker-registry on $REGISTRY (log: $REGISTRY_LOG)"
  setsid docker-registry serve "$REGISTRY_CONFIG" >>"$REGISTRY_LOG" 2>&1 </dev/null 3>&- 9>&- &
  wait_for "the registry on $REGISTRY" registry_answers
}

# --- 3. the second engine ------------------------------------------------------
ensure_engine() {
  if ! engine_answers; then
    mkdir -p "$DOCKERD_ROOT" "$DOCKERD_EXEC_ROOT"
    cat >"$DOCKERD_CONFIG" <<EOF
{
  "features": {"containerd-snapshotter": true},
  "registry-mirrors": ["http://$REGISTRY"],
  "insecure-registries": ["$REGISTRY"]
}
EOF
    # A bridge of its own: with --bridge=none, dockerd deletes the main engine's docker0 at start.
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
      ip link add "$BRIDGE" type bridge
      ip addr add "$BRIDGE_ADDR" dev "$BRIDGE"
      ip link set "$BRIDGE" up
    fi
    log "starting a second dockerd on $SOCKET (containerd image store; log: $DOCKERD_LOG)"
    setsid dockerd --config-file "$DOCKERD_CONFIG" --data-root "$DOCKERD_ROOT" \
      --exec-root "$DOCKERD_EXEC_ROOT" --pidfile /run/docker-multiplatform.pid \
      -H "unix://$SOCKET" --bridge="$BRIDGE" --iptables=false --ip6tables=false --ip-masq=false \
      >>"$DOCKERD_LOG" 2>&1 </dev/null 3>&- 9>&- &
    wait_for "the second dockerd on $SOCKET" engine_answers
  fi
  if ! docker context inspect "$CONTEXT" >/dev/null 2>&1; then
    docker context create "$CONTEXT" --description "fastapi-docker multi-platform builder" \
      --docker "host=unix://$SOCKET" >/dev/null
  fi
  local platforms
  platforms=$(docker --context "$CONTEXT" buildx inspect "$CONTEXT" 2>/dev/null | sed -n 's/^Platforms: *//p')
  [[ $platforms == *linux/arm64* ]] || die "the builder of context $CONTEXT lacks linux/arm64 (it has: $platforms)"
}

# --- 4. the base image for both platforms -----------------------------------------
# adapt_rootfs & co. come from offline-env.sh itself, so both platforms get the same recipe.
load_recipe() {
  local fn
  eval "$(sed -n -e '/^in_root() {/,/^}/p' -e '/^adapt_rootfs() {/,/^}/p' \
    -e '/^import_changes() {/,/^}/p' "$OFFLINE_ENV")"
  for fn in in_root adapt_rootfs import_changes; do
    declare -F "$fn" >/dev/null || die "no function $fn found in $OFFLINE_ENV"
  done
}

arm_recipe_hash() {
  # What determines the image: debootstrap's arguments and offline-env.sh's adaptation.
  { printf 'recipe-version=%s\nrelease=%s\narch=arm64\nvariant=minbase\nmirror=%s\nincludes=%s\n' \
      "$RECIPE_VERSION" "$RELEASE" "$DEBIAN_MIRROR" "$ARM_INCLUDE"
    declare -f in_root adapt_rootfs import_changes; } | sha256sum | cut -c1-16
}

manifest() {  # manifest REF : the raw manifest JSON in the loopback registry (or nothing)
  local repo=${1%:*} tag=${1##*:}
  curl -fsS --max-time 10 -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' \
    -H 'Accept: application/vnd.oci.image.index.v1+json' \
    "http://$REGISTRY/v2/$repo/manifests/$tag" 2>/dev/null || true
}

config_of() {  # config_of REF : the image config JSON of a single-platform REF (or nothing)
  local digest
  digest=$(manifest "$1" | jq -r '.config.digest // empty' 2>/dev/null || true)
  [[ -n $digest ]] || return 0
  curl -fsS --max-time 10 "http://$REGISTRY/v2/${1%:*}/blobs/$digest" 2>/dev/null || true
}

build_arm64() {  # build_arm64 REF HASH : debootstrap (through qemu), adapt, import, push
  local ref=$1 hash=$2 dir=$STATE_DIR/rootfs/$RELEASE-slim-arm64 cache=$CACHE_DIR/debootstrap/$RELEASE-arm64 pyver
  local steplog=$LOG_DIR/fastapi-docker-offline-env/debootstrap-$RELEASE-arm64.log
  mkdir -p "$cache" "${steplog%/*}"
  rm -rf --one-file-system "$dir"
  log "[arm64] debootstrap --arch=arm64 $RELEASE through qemu (~15 min; log: $steplog)"
  debootstrap --arch=arm64 --variant=minbase --cache-dir="$cache" --include="$ARM_INCLUDE" \
    "$RELEASE" "$dir" "$DEBIAN_MIRROR" >"$steplog" 2>&1 </dev/null ||
    { tail -n 20 "$steplog" >&2; die "debootstrap --arch=arm64 failed (log: $steplog)"; }
  adapt_rootfs "$dir" "$RELEASE" slim
  pyver=$(in_root "$dir" /usr/bin/python3 -c 'import platform; print(platform.python_version())')
  local changes=() c
  while IFS= read -r c; do changes+=(--change "$c"); done < <(import_changes "$pyver")
  changes+=(--change "LABEL $LABEL_RECIPE=$hash" --change "LABEL org.fastapi-docker.standin=$RELEASE-slim")
  log "[arm64] docker import -> $ref (python $pyver)"
  tar --numeric-owner -C "$dir" -c . |
    mp_docker import --platform linux/arm64 "${changes[@]}" - "$ref" >/dev/null || die "docker import of $dir failed"
  rm -rf --one-file-system "$dir"
  mp_docker push -q "$ref" >/dev/null || die "docker push $ref failed"
  mp_docker image rm "$ref" >/dev/null
}

ensure_base_images() {
  local repo=library/${BASE_TAG%:*} tag=${BASE_TAG##*:} amd arm index want
  amd=$REGISTRY/$repo:$tag-amd64 arm=$REGISTRY/$repo:$tag-arm64 index=$REGISTRY/$repo:$tag
  # amd64: the main engine's stand-in itself (its image ID is its config digest).
  want=$(docker image inspect -f '{{.Id}}' "$BASE_TAG" 2>/dev/null) ||
    die "the main engine has no $BASE_TAG (run scripts/offline-env.sh first)"
  if [[ $(manifest "${amd#*/}" | jq -r '.config.digest // empty' 2>/dev/null) != "$want" ]]; then
    log "[amd64] pushing the main engine's $BASE_TAG -> $amd"
    docker tag "$BASE_TAG" "$amd"
    docker push -q "$amd" >/dev/null || die "docker push $amd failed"
    docker image rm "$amd" >/dev/null
  fi
  load_recipe
  local hash
  hash=$(arm_recipe_hash)
  if [[ $(config_of "${arm#*/}" | jq -r ".config.Labels[\"$LABEL_RECIPE\"] // empty" 2>/dev/null) != "$hash" ]]; then
    build_arm64 "$arm" "$hash"
  fi
  # The index must name exactly the current two manifests.
  local d_amd d_arm have
  d_amd=$(manifest "${amd#*/}" | sha256sum | cut -d' ' -f1)
  d_arm=$(manifest "${arm#*/}" | sha256sum | cut -d' ' -f1)
  have=$(manifest "${index#*/}" | jq -r '[.manifests[]?.digest] | sort | join(" ")' 2>/dev/null || true)
  if [[ $have != "$(printf 'sha256:%s\n' "$d_amd" "$d_arm" | sort | paste -sd' ')" ]]; then
    log "index $index -> linux/amd64 + linux/arm64"
    docker buildx imagetools create -t "$index" "$amd" "$arm" >/dev/null 2>&1 ||
      die "docker buildx imagetools create -t $index failed: $(docker buildx imagetools create -t "$index" "$amd" "$arm" 2>&1 | tail -n 3)"
  fi
}

ensure_packages
ensure_binfmt
ensure_registry
ensure_engine
ensure_base_images
log "ready in ${SECONDS}s: docker --context $CONTEXT buildx build --platform linux/amd64,linux/arm64 (FROM docker.io/$BASE_TAG via $REGISTRY)"
print_env >&3
