# shellcheck shell=bash
# images.sh - stand-ins for the official base images under their official tags, debootstrapped (no
# registry is reachable, so nothing can be pulled). Every image of the table that is missing, or whose
# recipe changed since it was built (its label holds the recipe's hash), is (re)built, in parallel.

readonly LABEL_RECIPE=org.fastapi-docker.standin-recipe
readonly RECIPE_VERSION=1  # bump to rebuild every stand-in
# What shapes an image besides its row, hashed with it; the recipe files below add theirs.
RECIPE_FUNCTIONS=(make_rootfs apt_in in_root)
# shellcheck source=python.sh
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"

# The table, a row per image (in STANDINS). tags: the primary tag, then aliases (each one a FROM line
# of the template, from cookiecutter.json's __base_image, or of the benchmark's baseline). release,
# include: the Debian release debootstrapped and its --include packages (rows with both the same
# share one debootstrap). recipe: a function DIR RELEASE that makes the tree the official image and
# prints its config as `docker import --change` lines.
# shellcheck disable=SC2034  # the rows are read through namerefs
{
  declare -gA py311_slim=([tags]=python:3.11-slim-bookworm [release]=bookworm [include]=$PY_BOOKWORM [recipe]=python_slim)
  declare -gA py313_slim=([tags]="python:3.13-slim-trixie python:3.13-slim" [release]=trixie [include]=$PY_SLIM [recipe]=python_slim)
  declare -gA py311_full=([tags]=python:3.11-bookworm [release]=bookworm [include]=$PY_BOOKWORM [recipe]=python_full)
  declare -gA py313_full=([tags]="python:3.13-trixie python:3.13" [release]=trixie [include]=$PY_SLIM [recipe]=python_full)
}
STANDINS=(py311_slim py313_slim py311_full py313_full)

in_root() {  # in_root DIR CMD... : CMD in the tree, with none of the host's environment (PIP_*, SSL_*)
  local dir=$1; shift
  chroot "$dir" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
    PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

make_rootfs() {  # make_rootfs DIR RELEASE INCLUDE
  local cache=$CACHE_DIR/debootstrap/$2
  remove_rootfs "$1"  # what a failed attempt left
  mkdir -p "$1" "$cache"
  log "[$2] debootstrap --variant=minbase --include=$3 $2 (log: $STEP_LOG_DIR/debootstrap-$2.log)"
  run_logged "debootstrap-$2" debootstrap --variant=minbase --cache-dir="$cache" --include="$3" "$2" "$1" "$DEBIAN_MIRROR"
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
  { printf 'recipe-version=%s\nmirror=%s\nrelease=%s\ninclude=%s\n' "$RECIPE_VERSION" "$DEBIAN_MIRROR" "${row[release]}" "${row[include]}"
    declare -f "${RECIPE_FUNCTIONS[@]}" "${row[recipe]}"; } | sha256sum | cut -c1-16
}

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

standin_current() {  # standin_current ROW : the primary tag has the row's recipe; aliases are (re)pointed at it
  local -n row=$1
  local tags t
  read -ra tags <<<"${row[tags]}"
  [[ $(docker image inspect -f "{{index .Config.Labels \"$LABEL_RECIPE\"}}" "${tags[0]}" 2>/dev/null) == "$(recipe_hash "$1")" ]] ||
    return 1
  for t in "${tags[@]:1}"; do
    [[ $(image_id "$t") == "$(image_id "${tags[0]}")" ]] || docker tag "${tags[0]}" "$t"
  done
  log "[$1] ${row[tags]}: current"
}

build_standin() {  # build_standin ROW : the release's debootstrap (shared), the recipe, docker import
  local -n row=$1
  local name=$1 dir=$STATE_DIR/rootfs/$1 base hash tags changes=() c old new id
  base=$STATE_DIR/rootfs/base-${row[release]}-$(cksum <<<"${row[include]}" | cut -d' ' -f1)
  read -ra tags <<<"${row[tags]}"
  hash=$(recipe_hash "$name")
  { flock 8; [[ -e $base.done ]] || { make_rootfs "$base" "${row[release]}" "${row[include]}"; touch "$base.done"; }; } \
    8>"$STATE_DIR/rootfs/debootstrap-${row[release]}.lock"
  cp -a "$base" "$dir"
  "${row[recipe]}" "$dir" "${row[release]}" >"$dir.config"
  while IFS= read -r c; do changes+=(--change "$c"); done <"$dir.config"
  old=$(for c in "${tags[@]}"; do image_id "$c"; done | sort -u)
  log "[$name] docker import -> ${row[tags]}"
  tar --numeric-owner -C "$dir" -c . | docker import "${changes[@]}" --change "LABEL $LABEL_RECIPE=$hash" \
    --change "LABEL org.fastapi-docker.standin=$name" -m "fastapi-docker stand-in $name (recipe $hash)" - "${tags[0]}" \
    >/dev/null || die "[$name] docker import of $dir failed"
  for c in "${tags[@]:1}"; do docker tag "${tags[0]}" "$c"; done
  remove_rootfs "$dir"
  new=$(image_id "${tags[0]}")
  for id in $old; do  # the superseded image goes, unless something still uses it
    [[ $id == "$new" ]] || docker image rm "$id" >/dev/null 2>&1 || true
  done
  log "[$name] built: ${row[tags]}, $(($(docker image inspect -f '{{.Size}}' "$new") / 1000000)) MB"
}

ensure_images() {
  apt_install debootstrap xz-utils
  remove_rootfs "$STATE_DIR/rootfs"  # what an interrupted run left
  mkdir -p "$STATE_DIR/rootfs"
  local name pids=() i rc=0
  for name in "${STANDINS[@]}"; do
    standin_current "$name" && continue
    (trap - EXIT; build_standin "$name") &
    pids+=("$!:$name")
  done
  for i in "${pids[@]}"; do
    wait "${i%%:*}" || { warn "building ${i#*:} failed (see above)"; rc=1; }
  done
  [[ $rc -eq 0 ]] || die "stand-in image build failed"
}

umount_under() {  # umount_under DIR : what debootstrap or a chroot left mounted in DIR
  local m
  [[ -d $1 ]] || return 0
  awk -v d="$(readlink -f "$1")/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r |
    while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done
}

remove_rootfs() {
  [[ -e $1 ]] || return 0
  umount_under "$1"
  rm -rf --one-file-system "$1"
}
