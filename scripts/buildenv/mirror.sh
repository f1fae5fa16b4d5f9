# shellcheck shell=bash
# mirror.sh - a loopback PyPI pull-through mirror (devpi-server in a venv of its own): containers reach
# PyPI only through it, in builds with --network host.

readonly MIRROR=127.0.0.1:3141
readonly INDEX_URL=http://$MIRROR/root/pypi/+simple/
readonly DEVPI_VERSION=6.20.3 DEVPI_VENV=/opt/fastapi-docker/devpi-venv DEVPI_DIR=$STATE_DIR/devpi
readonly DEVPI_LOG=/var/log/devpi-offline-env.log
readonly CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt  # holds the CA of the TLS-intercepting proxy

mirror_answers() { curl -fsS --max-time 5 -o /dev/null "http://$MIRROR/+api" 2>/dev/null; }

ensure_mirror() {
  if [[ $("$DEVPI_VENV/bin/devpi-server" --version 2>/dev/null) != "$DEVPI_VERSION" ]]; then
    local py
    py=$(command -v python3 || true)  # one with venv and ensurepip, else Debian's with python3-venv
    "${py:-false}" -c 'import venv, ensurepip' >/dev/null 2>&1 || { apt_install python3-venv; py=/usr/bin/python3; }
    log "installing devpi-server==$DEVPI_VERSION into $DEVPI_VENV (python: $py)"
    run_logged devpi-venv "$py" -m venv --clear "$DEVPI_VENV"
    run_logged devpi-pip "$DEVPI_VENV/bin/python" -m pip install --disable-pip-version-check "devpi-server==$DEVPI_VERSION"
  fi
  if ! mirror_answers; then
    [[ -e $DEVPI_DIR/.serverversion ]] ||
      { mkdir -p "$DEVPI_DIR"; run_logged devpi-init "$DEVPI_VENV/bin/devpi-init" --serverdir "$DEVPI_DIR"; }
    ! ss -Hltn "sport = :${MIRROR#*:}" | grep -q . || die "port ${MIRROR#*:} is taken by something not devpi"
    log "starting devpi-server on $MIRROR (log: $DEVPI_LOG)"
    daemon "$DEVPI_LOG" env SSL_CERT_FILE="$CA_BUNDLE" REQUESTS_CA_BUNDLE="$CA_BUNDLE" \
      "$DEVPI_VENV/bin/devpi-server" --serverdir "$DEVPI_DIR" --host "${MIRROR%:*}" --port "${MIRROR#*:}"
    wait_until devpi-server "$DEVPI_LOG" mirror_answers
  fi
  # Ask PyPI only for the projects requested: else devpi's first lookup fetches PyPI's whole name list.
  local base=http://$MIRROR/root/pypi
  if ! [[ $(curl -fsS --max-time 10 "$base?no_projects=") =~ \"mirror_no_project_list\":\ *true ]]; then
    log "configuring root/pypi: mirror_no_project_list=True"
    curl -fsS --max-time 10 -u root: -X PATCH -H 'Content-Type: application/json' \
      -d '["mirror_no_project_list=True"]' "$base" >/dev/null || die "could not configure $base"
  fi
  # A real project page through PyPI: the upstream works (and the mirror is warm).
  curl -fsS --max-time "$TIMEOUT" -o /dev/null "${INDEX_URL}pip/" ||
    die "the mirror cannot serve ${INDEX_URL}pip/ (PyPI unreachable? CA bundle $CA_BUNDLE; log: $DEVPI_LOG)"
  log "mirror serves PyPI: $INDEX_URL"
}
