#!/usr/bin/env bash
# buildenv/nodes.sh - a second machine for multi-node Swarm tests: a Docker engine in a network namespace of its
# own (its own hostname and address), which the main engine's swarm can take as a worker (README.md says why).
# Usage: bash scripts/buildenv/nodes.sh [--print-env | --down]
#   (none)       ensure the worker engine and its registry path; env.sh runs it after the other parts
#   --print-env  only the export lines, if the worker answers (no root, no changes)
#   --down       stop the worker engine and its forwarders, remove its namespace and link (its data root stays)
# It joins no swarm: forming one is the test's walk-through (docker swarm init / join), and a swarm left on the
# shared main engine would change what every other user of that engine sees.
set -euo pipefail
readonly PROG=nodes
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
readonly NETNS=fd-swarm-worker HOSTNAME_=swarm-worker
readonly HOST_LINK=fd-swarm0 NS_LINK=fd-swarm1 HOST_ADDR=10.23.0.1 NS_ADDR=10.23.0.2 PREFIX=24
readonly SOCKET=/run/docker-swarm-worker.sock PIDFILE=/run/docker-swarm-worker.pid
readonly DOCKERD_ROOT=/var/lib/docker-swarm-worker DOCKERD_EXEC_ROOT=/run/docker-swarm-worker
readonly DOCKERD_LOG=/var/log/dockerd-swarm-worker.log FORWARD_LOG=/var/log/registry-forward-swarm-worker.log
# The loopback registry (multiplatform.sh's), at the same address inside the namespace: through a UNIX socket,
# which is not bound to a network namespace, so the registry stays on the host's loopback only.
readonly REGISTRY=127.0.0.1:5000 REGISTRY_SOCKET=/run/fd-swarm-worker-registry.sock

in_ns() { nsenter --net="/var/run/netns/$NETNS" "$@"; }  # not `ip netns exec`: it remounts /sys (no cgroups)
worker_answers() { timeout 10 docker -H "unix://$SOCKET" info >/dev/null 2>&1; }
registry_from_ns() { in_ns curl -fsS -o /dev/null --max-time 5 "http://$REGISTRY/v2/" 2>/dev/null; }
# pids_of PATTERN : the processes whose command line holds PATTERN (this part's own, told apart by their paths)
pids_of() { pgrep -f -- "$1" || true; }

print_env() {
  if worker_answers; then
    printf 'export FASTAPI_DOCKER_SWARM_WORKER_HOST=unix://%s\n' "$SOCKET"
    printf 'export FASTAPI_DOCKER_SWARM_ADVERTISE_ADDR=%s\n' "$HOST_ADDR"
    printf 'export FASTAPI_DOCKER_SWARM_REGISTRY=%s\n' "$REGISTRY"
  fi
}

ensure_link() {
  [[ -e /var/run/netns/$NETNS ]] || { log "network namespace $NETNS"; ip netns add "$NETNS"; }
  ip -n "$NETNS" link set lo up
  if ! ip link show "$HOST_LINK" >/dev/null 2>&1; then
    log "veth $HOST_LINK ($HOST_ADDR) <-> $NS_LINK ($NS_ADDR, in $NETNS)"
    ip -n "$NETNS" link del "$NS_LINK" 2>/dev/null || true
    ip link add "$HOST_LINK" type veth peer name "$NS_LINK" netns "$NETNS"
  fi
  ip addr replace "$HOST_ADDR/$PREFIX" dev "$HOST_LINK"
  ip link set "$HOST_LINK" up
  ip -n "$NETNS" addr replace "$NS_ADDR/$PREFIX" dev "$NS_LINK"
  ip -n "$NETNS" link set "$NS_LINK" up
  ip -n "$NETNS" route replace default via "$HOST_ADDR"
}

ensure_forward() {
  registry_from_ns && return 0
  curl -fsS -o /dev/null --max-time 5 "http://$REGISTRY/v2/" || die "no registry on $REGISTRY (multiplatform.sh starts it)"
  pids_of "UNIX-LISTEN:$REGISTRY_SOCKET" | xargs -r kill
  pids_of "UNIX-CONNECT:$REGISTRY_SOCKET" | xargs -r kill
  rm -f "$REGISTRY_SOCKET"
  log "forwarding $REGISTRY in $NETNS to the host's (log: $FORWARD_LOG)"
  daemon "$FORWARD_LOG" socat "UNIX-LISTEN:$REGISTRY_SOCKET,fork,mode=600" "TCP:$REGISTRY"
  daemon "$FORWARD_LOG" nsenter --net="/var/run/netns/$NETNS" \
    socat "TCP-LISTEN:${REGISTRY##*:},bind=${REGISTRY%:*},fork,reuseaddr" "UNIX-CONNECT:$REGISTRY_SOCKET"
  wait_until "the registry from $NETNS" "$FORWARD_LOG" registry_from_ns
}

ensure_worker() {
  worker_answers && return 0
  [[ -z $(pids_of "--exec-root $DOCKERD_EXEC_ROOT") ]] || die "a worker dockerd runs but does not answer on $SOCKET (see $DOCKERD_LOG; --down stops it)"
  mkdir -p "$DOCKERD_ROOT" "$DOCKERD_EXEC_ROOT"
  rm -f "$PIDFILE"
  log "starting the worker dockerd ($HOSTNAME_, $NS_ADDR, $SOCKET; log: $DOCKERD_LOG)"
  # Its own UTS namespace for its own hostname (the swarm's node name); its own containerd (under the exec
  # root); its bridge and iptables rules are the namespace's, apart from the main engine's.
  daemon "$DOCKERD_LOG" nsenter --net="/var/run/netns/$NETNS" unshare --uts sh -c \
    "hostname $HOSTNAME_ && exec dockerd --data-root $DOCKERD_ROOT --exec-root $DOCKERD_EXEC_ROOT \
     --pidfile $PIDFILE -H unix://$SOCKET"
  wait_until "the worker dockerd on $SOCKET" "$DOCKERD_LOG" worker_answers
}

down() {
  if worker_answers && [[ $(docker -H "unix://$SOCKET" info -f '{{.Swarm.LocalNodeState}}') != inactive ]]; then
    log "the worker leaves its swarm"
    docker -H "unix://$SOCKET" swarm leave --force >/dev/null || true
  fi
  local pid
  for pid in $(pids_of "dockerd --data-root $DOCKERD_ROOT"); do kill "$pid"; done
  for _ in {1..60}; do [[ -n $(pids_of "dockerd --data-root $DOCKERD_ROOT") ]] || break; sleep 0.5; done
  pids_of "$DOCKERD_EXEC_ROOT/" | xargs -r kill -9  # what did not stop: its containerd
  pids_of "$REGISTRY_SOCKET" | xargs -r kill
  rm -f "$REGISTRY_SOCKET" "$SOCKET" "$PIDFILE"
  ip link del "$HOST_LINK" 2>/dev/null || true
  [[ ! -e /var/run/netns/$NETNS ]] || ip netns del "$NETNS"
  log "down: no worker engine, namespace or link (its data root $DOCKERD_ROOT stays)"
}

case ${1:-} in
  "") ;;
  --print-env) print_env; exit 0 ;;
  --down) [[ $(id -u) -eq 0 ]] || die "must run as root"; exec 3>&1 1>&2; take_lock; down; exit 0 ;;
  *) die "unknown argument: $1 (use no argument, --print-env or --down)" ;;
esac
[[ $(id -u) -eq 0 ]] || die "must run as root (it makes a network namespace and starts a dockerd)"
exec 3>&1 1>&2  # fd 3: the caller's stdout, for the export lines only
take_lock
apt_install socat curl iproute2 util-linux
ensure_link
ensure_forward
ensure_worker
log "ready: worker engine $HOSTNAME_ at $NS_ADDR (docker -H unix://$SOCKET); the manager advertises $HOST_ADDR"
print_env >&3
