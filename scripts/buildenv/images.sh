# shellcheck shell=bash
# images.sh - stand-ins for the official base images under their official tags (nothing can be pulled):
# every row of the table that is missing, or whose recipe hash (its label) changed, is built, in parallel.

readonly LABEL_RECIPE=org.fastapi-docker.standin-recipe RECIPE_VERSION=1  # bump to rebuild every stand-in
readonly FILES=${BASH_SOURCE[0]%/*}/files  # what recipes copy in
readonly SHARED_FUNCTIONS=(make_rootfs apt_in in_root)  # hashed with every recipe; the recipe files add, per recipe,
declare -gA RECIPE_FUNCTIONS=() RECIPE_FILES=()  # the functions and files/ entries that shape its image (hashed)
# shellcheck source=python.sh
source "${BASH_SOURCE[0]%/*}/python.sh"
# shellcheck source=postgres.sh
source "${BASH_SOURCE[0]%/*}/postgres.sh"
# shellcheck source=prometheus.sh
source "${BASH_SOURCE[0]%/*}/prometheus.sh"

# A row per image: tags (the primary, then aliases: FROM lines of the template or the benchmark), the
# Debian release and --include list debootstrapped (shared by rows with both equal), the recipe.
# shellcheck disable=SC2034  # the rows are read through namerefs
{
  declare -gA py311_slim=([tags]=python:3.11-slim-bookworm [release]=bookworm [include]=$PY_BOOKWORM [recipe]=python_slim)
  declare -gA py313_slim=([tags]="python:3.13-slim-trixie python:3.13-slim" [release]=trixie [include]=$PY_SLIM [recipe]=python_slim)
  declare -gA py311_full=([tags]=python:3.11-bookworm [release]=bookworm [include]=$PY_BOOKWORM [recipe]=python_full)
  declare -gA py313_full=([tags]="python:3.13-trixie python:3.13" [release]=trixie [include]=$PY_SLIM [recipe]=python_full)
  declare -gA pg17=([tags]=postgres:$PG_MAJOR [release]=trixie [include]=$PG_INCLUDE [recipe]=postgres_rootfs)
  declare -gA prom=([tags]=prom/prometheus:v$PROM_VERSION [release]=trixie [include]=$PROM_INCLUDE [recipe]=prometheus_rootfs)
  # py313_slim for arm64 (through qemu), under a tag of its own: multiplatform.sh pushes it beside the amd64 one.
  declare -gA py313_slim_arm64=([tags]=fastapi-docker-standin/python:3.13-slim-trixie-arm64 [release]=trixie \
    [include]=$PY_SLIM [recipe]=python_slim [arch]=arm64)
}
STANDINS=(py311_slim py313_slim py311_full py313_full pg17 prom py313_slim_arm64)

in_root() {  # in_root DIR CMD... : CMD in the tree, with none of the host's environment (PIP_*, SSL_*)
  chroot "$1" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin "${@:2}"
}

make_rootfs() {  # make_rootfs DIR RELEASE INCLUDE [ARCH] : a minbase debootstrap, anew
  local name=$2${4:+-$4}
  remove_rootfs "$1"  # what a failed attempt left
  mkdir -p "$1" "$CACHE_DIR/debootstrap/$name"
  log "[$name] debootstrap ${4:+--arch=$4 }--variant=minbase --include=$3 $2 (log: $STEP_LOG_DIR/debootstrap-$name.log)"
  run_logged "debootstrap-$name" debootstrap ${4:+"--arch=$4"} --variant=minbase --cache-dir="$CACHE_DIR/debootstrap/$name" \
    --include="$3" "$2" "$1" "$DEBIAN_MIRROR"
  umount_under "$1"
}

apt_in() {  # apt_in DIR PKG... : apt-get in a chroot, on the debootstrap's lists (3x faster than --include)
  local dir=$1; shift
  cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
  log "[${dir##*/}] apt-get install $* (in a chroot; log: $STEP_LOG_DIR/apt-${dir##*/}.log)"
  run_logged "apt-${dir##*/}" in_root "$dir" DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
  umount_under "$dir"
}

recipe_hash() {  # recipe_hash ROW
  local -n row=$1
  local fns files
  read -ra fns <<<"${RECIPE_FUNCTIONS[${row[recipe]}]:-}"; read -ra files <<<"${RECIPE_FILES[${row[recipe]}]:-}"
  { printf 'recipe-version=%s\nmirror=%s\nrelease=%s\ninclude=%s\narch=%s\n' "$RECIPE_VERSION" "$DEBIAN_MIRROR" \
      "${row[release]}" "${row[include]}" "${row[arch]:-}"
    declare -f "${SHARED_FUNCTIONS[@]}" "${fns[@]}" "${row[recipe]}"
    (cd "$FILES" && find "${files[@]}" -type f -exec sha256sum {} + | sort); } | sha256sum | cut -c1-16
}

inspect() { docker image inspect -f "$1" "$2" 2>/dev/null || true; }  # inspect FORMAT IMAGE
import_rootfs() {  # import_rootfs ROW DIR REF IMPORT... : the row's recipe on DIR, then DIR imported as REF
  local -n row=$1
  local hash changes=() c
  hash=$(recipe_hash "$1")
  "${row[recipe]}" "$2" "${row[release]}" >"$2.config"
  while IFS= read -r c; do changes+=(--change "$c"); done <"$2.config"
  log "[$1] docker import -> $3"
  tar --numeric-owner -C "$2" -c . | "${@:4}" "${changes[@]}" --change "LABEL $LABEL_RECIPE=$hash" \
    --change "LABEL org.fastapi-docker.standin=$1" -m "fastapi-docker stand-in $1 (recipe $hash)" - "$3" >/dev/null ||
    die "[$1] docker import of $2 failed"
  remove_rootfs "$2"; rm -f "$2.config"
}

standin() {  # standin ROW : the primary tag is current (labelled with the row's recipe hash) or built; aliases on it
  local -n row=$1
  local base tags old new id
  read -ra tags <<<"${row[tags]}"
  old=$(for id in "${tags[@]}"; do inspect '{{.Id}}' "$id"; done | sort -u)
  if [[ $(inspect "{{index .Config.Labels \"$LABEL_RECIPE\"}}" "${tags[0]}") == "$(recipe_hash "$1")" ]]; then
    log "[$1] ${row[tags]}: current"
  else  # the release's debootstrap (shared by rows), a copy of it, the recipe, the import
    base=$STATE_DIR/rootfs/base-${row[release]}${row[arch]:+-${row[arch]}}-$(cksum <<<"${row[include]}" | cut -d' ' -f1)
    { flock 8; [[ -e $base.done ]] || { make_rootfs "$base" "${row[release]}" "${row[include]}" ${row[arch]:+"${row[arch]}"}
      touch "$base.done"; }; } 8>"$base.lock"
    cp -a "$base" "$STATE_DIR/rootfs/$1"
    import_rootfs "$1" "$STATE_DIR/rootfs/$1" "${tags[0]}" docker import ${row[arch]:+--platform "linux/${row[arch]}"}
    log "[$1] built: ${row[tags]}, $(($(inspect '{{.Size}}' "${tags[0]}") / 1000000)) MB"
  fi
  new=$(inspect '{{.Id}}' "${tags[0]}")
  for id in "${tags[@]:1}"; do [[ $(inspect '{{.Id}}' "$id") == "$new" ]] || docker tag "${tags[0]}" "$id"; done
  for id in $old; do [[ $id == "$new" ]] || docker image rm "$id" >/dev/null 2>&1 || true; done  # superseded, unless in use
}

ensure_binfmt() {  # arm64 binaries run here (qemu), also in a container's root
  local entry=/proc/sys/fs/binfmt_misc/qemu-aarch64
  [[ -e /proc/sys/fs/binfmt_misc/register ]] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
    die "cannot mount binfmt_misc (no CAP_SYS_ADMIN, or no CONFIG_BINFMT_MISC): arm64 binaries cannot run here"
  [[ -e $entry ]] || update-binfmts --enable qemu-aarch64 || die "update-binfmts --enable qemu-aarch64 failed"
  grep -qx enabled "$entry" || die "$entry is not enabled"
  # F: the kernel opens the interpreter at registration, so it works in a container's root too.
  grep -q '^flags: .*F' "$entry" || die "$entry lacks the F (fix-binary) flag: arm64 RUN steps would fail in containers"
}

ensure_images() {
  apt_install debootstrap xz-utils qemu-user-static binfmt-support
  ensure_binfmt
  remove_rootfs "$STATE_DIR/rootfs"; mkdir -p "$STATE_DIR/rootfs"  # without what an interrupted run left
  local name rc=0
  local -A pids=()
  for name in "${STANDINS[@]}"; do (trap - EXIT; standin "$name") & pids[$name]=$!; done
  for name in "${!pids[@]}"; do wait "${pids[$name]}" || { warn "building $name failed (see above)"; rc=1; }; done
  ((rc == 0)) || die "stand-in image build failed"
}

umount_under() {  # umount_under DIR : what debootstrap or a chroot left mounted in DIR
  [[ ! -d $1 ]] || awk -v d="$(readlink -f "$1")/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r |
    xargs -r -d '\n' -n1 umount -l 2>/dev/null || true
}
remove_rootfs() { [[ ! -e $1 ]] || { umount_under "$1"; rm -rf --one-file-system "$1"; }; }
