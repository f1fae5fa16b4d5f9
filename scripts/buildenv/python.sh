# shellcheck shell=bash
# python.sh - the recipe of the python stand-ins (rows of images.sh): Debian's own python, arranged as
# the official python image has it (pip in /usr/local, site-packages, apt and dpkg configuration), so
# that Dockerfiles written for the official image build on them unchanged.

readonly PY_SLIM=python3,python3-venv,ca-certificates,netbase,tzdata  # no python3-pip: see adapt_rootfs
# shellcheck disable=SC2034  # for the rows of images.sh; bookworm packages parts of 3.11's stdlib apart
readonly PY_BOOKWORM=$PY_SLIM,python3-distutils,python3-lib2to3
RECIPE_FUNCTIONS+=(adapt_rootfs import_changes python_config)

python_slim() {  # ~ the official python:X.Y-slim-RELEASE
  adapt_rootfs "$1" "$2" slim
  python_config "$1"
}

python_full() {  # ~ the official python:X.Y-RELEASE (buildpack-deps: compilers, dev tools)
  apt_in "$1" build-essential python3-dev pkg-config git curl wget libffi-dev libssl-dev procps
  adapt_rootfs "$1" "$2" full
  python_config "$1"
}

python_config() { import_changes "$(in_root "$1" /usr/bin/python3 -c 'import platform; print(platform.python_version())')"; }

import_changes() {  # import_changes PYTHON_VERSION : the official image's config
  printf '%s\n' \
    "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "ENV LANG=C.UTF-8" \
    "ENV PYTHON_VERSION=$1" \
    'CMD ["python3"]'
}

# adapt_rootfs DIR RELEASE FLAVOUR. pip comes from the wheel Debian bundles, into /usr/local, so that
# `pip install --upgrade pip` works as in the official image (trixie's python3-pip refuses: no RECORD).
adapt_rootfs() {
  local dir=$1 release=$2 flavour=$3 f
  # Never the host: DIR must be a debootstrapped tree, not /.
  [[ -n $dir && $(readlink -f "$dir") != / && -f $dir/etc/debian_version ]] ||
    die "adapt_rootfs: refusing to work on '$dir'"
  # pip may install system-wide, like in the official image (PEP 668 marker).
  rm -f "$dir"/usr/lib/python3*/EXTERNALLY-MANAGED
  # python / pip (and python3 / pip3) in /usr/local/bin, as in the official image.
  mkdir -p "$dir/usr/local/bin"
  ln -sfn /usr/bin/python3 "$dir/usr/local/bin/python"
  ln -sfn /usr/bin/python3 "$dir/usr/local/bin/python3"
  # pip (+ setuptools before 3.12) into /usr/local from the wheels Debian bundles for venv.
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
  # Debian's python installs into /usr/local/lib/pythonX.Y/dist-packages: alias the official
  # site-packages, which Dockerfiles COPY --from=build.
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
  # apt as in the official debian images: deb822 sources with security, caches cleaned, no recommends.
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
  cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  printf 'APT::Install-Recommends "false";\n' >"$dir/etc/apt/apt.conf.d/docker-no-recommends"
  if [[ $flavour == slim ]]; then
    # Like debian:*-slim: no docs, man pages or locales, now or in later installs; no test suites.
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
    rm -rf "$dir"/usr/lib/python3*/test "$dir"/usr/lib/python3*/*/test
  fi
  # Small and host-neutral.
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb \
    "$dir"/var/cache/apt/archives/partial/* "$dir"/var/cache/apt/*.bin \
    "$dir"/var/cache/debconf/*-old "$dir"/var/lib/dpkg/*-old \
    "$dir"/var/log/*.log "$dir"/var/log/apt/* "$dir"/tmp/* "$dir"/var/tmp/* \
    "$dir"/root/.cache "${dir:?}"/dev/*
  mkdir -p "$dir/var/lib/apt/lists/partial" "$dir/var/cache/apt/archives/partial"
  : >"$dir/etc/resolv.conf"
  : >"$dir/etc/hostname"
  if [[ -e $dir/etc/machine-id ]]; then : >"$dir/etc/machine-id"; fi
  # What Dockerfiles for the official image rely on.
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
