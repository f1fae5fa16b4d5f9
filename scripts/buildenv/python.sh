# shellcheck shell=bash
# python.sh - the python stand-ins' recipe (rows of images.sh): Debian's python in the official image's
# layout, so that Dockerfiles written for it build unchanged (README.md lists what that takes).

readonly PY_SLIM=python3,python3-venv,ca-certificates,netbase,tzdata  # no python3-pip: pip comes from a wheel
# shellcheck disable=SC2034  # for the rows of images.sh; bookworm packages parts of 3.11's stdlib apart
readonly PY_BOOKWORM=$PY_SLIM,python3-distutils,python3-lib2to3
RECIPE_FUNCTIONS+=(["python_slim"]=python_rootfs ["python_full"]=python_rootfs)
RECIPE_FILES+=(["python_slim"]="python python-slim python.changes" ["python_full"]="python python-slim python.changes")

python_slim() { python_rootfs "$1" "$2" slim; }
python_full() {  # + what buildpack-deps adds: compilers, headers, dev tools
  apt_in "$1" build-essential python3-dev pkg-config git curl wget libffi-dev libssl-dev procps
  python_rootfs "$1" "$2" full
}

python_rootfs() {  # python_rootfs DIR RELEASE FLAVOUR : arrange the tree, print its `--change` lines
  local dir=$1 wheels=/usr/share/python-wheels pkgs=(pip) pipwhl v d
  [[ -n $dir && $(readlink -f "$dir") != / && -f $dir/etc/debian_version ]] || die "refusing '$dir': not a debootstrap"
  rm -f "$dir"/usr/lib/python3*/EXTERNALLY-MANAGED  # pip may install system-wide
  mkdir -p "$dir/usr/local/bin"
  for d in python python3; do ln -sfn /usr/bin/python3 "$dir/usr/local/bin/$d"; done
  if [[ -x $dir/usr/bin/python3-config ]]; then ln -sfn /usr/bin/python3-config "$dir/usr/local/bin/python-config"; fi
  v=$(in_root "$dir" /usr/bin/python3 -c 'import platform; print(platform.python_version())')
  if dpkg --compare-versions "$v" lt 3.12; then pkgs+=(setuptools); fi
  pipwhl=$(cd "$dir$wheels" && compgen -G 'pip-*.whl' | head -n1) || die "$dir: no pip wheel in $wheels"
  in_root "$dir" /usr/bin/python3 "$wheels/$pipwhl/pip" install --no-index --find-links "$wheels" \
    --no-cache-dir --disable-pip-version-check --root-user-action=ignore --no-warn-script-location \
    "${pkgs[@]}" >/dev/null || die "$dir: installing ${pkgs[*]} from $wheels failed"
  for d in "$dir"/usr/lib/python3.[0-9]*; do  # Debian's dist-packages as the official site-packages
    [[ -d $d ]] || continue
    mkdir -p "$dir/usr/local/lib/${d##*/}/dist-packages"
    ln -sfn dist-packages "$dir/usr/local/lib/${d##*/}/site-packages"
  done
  rm -f "$dir/etc/apt/sources.list"
  cp -r "$FILES/python/." "$dir/"
  sed -i "s/@RELEASE@/$2/g" "$dir/etc/apt/sources.list.d/debian.sources"
  if [[ $3 == slim ]]; then  # like debian:*-slim: no docs, man pages, locales (now or later), test suites
    cp -r "$FILES/python-slim/." "$dir/"
    find "$dir/usr/share/doc" -mindepth 1 \( -not -type d -not -name copyright -o -type d -empty \) -delete 2>/dev/null || true
    find "$dir"/usr/share/{groff,info,linda,lintian/overrides,locale,man} -mindepth 1 -delete 2>/dev/null || true
    rm -rf "$dir"/usr/lib/python3*/test "$dir"/usr/lib/python3*/*/test
  fi
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/archives/partial/* \
    "$dir"/var/cache/apt/*.bin "$dir"/var/cache/debconf/*-old "$dir"/var/lib/dpkg/*-old "$dir"/var/log/*.log \
    "$dir"/var/log/apt/* "$dir"/tmp/* "$dir"/var/tmp/* "$dir"/root/.cache "${dir:?}"/dev/*  # small, host-neutral
  mkdir -p "$dir/var/lib/apt/lists/partial" "$dir/var/cache/apt/archives/partial"
  truncate -s 0 "$dir/etc/resolv.conf" "$dir/etc/hostname"; truncate -cs 0 "$dir/etc/machine-id"
  in_root "$dir" /usr/bin/python3 -c 'import ensurepip, pip, shutil, sqlite3, ssl, sys, sysconfig, venv
assert not (m := [t for t in "bash useradd groupadd python python3 pip".split() if not shutil.which(t)]), m
p = sysconfig.get_path("purelib")  # where pip installs: /usr/local, on sys.path
assert pip.__file__.startswith("/usr/local/lib/") and p.startswith("/usr/local/lib/") and p in sys.path, p' >&2 ||
    die "$dir lacks what Dockerfiles for the official image rely on (see above)"
  sed "s/@PYTHON_VERSION@/$v/" "$FILES/python.changes"
}
