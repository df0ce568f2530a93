#!/usr/bin/env bash
# Stops exactly the processes up.sh recorded in $STATE/pids (never by name), then removes $STATE.
# A pid is only signalled if /proc/<pid>/cmdline still shows our binary (pids get reused).
# Env: see env.sh;  JUKINET_DOWN_TIMEOUT  seconds between TERM and KILL (default 15)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"
TIMEOUT="${JUKINET_DOWN_TIMEOUT:-15}"
BIN="$CACHE/bin"

log() { printf '[down %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
ours() { # pid name
  [[ -r "/proc/$1/cmdline" ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF "$BIN/$2 "
}

# The real node first (its kubelet talks to the API server), if this cluster has one.
if [[ -d "$STATE/node" ]]; then bash "$HERE/node.sh" down; fi

# Reverse start order: clients first, etcd last.
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  f="$STATE/pids/$name.pid"
  [[ -f "$f" ]] || continue
  pid="$(cat "$f")"
  if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! ours "$pid" "$name"; then
    log "$name: pid ${pid:-?} not running (or not ours); nothing to stop"
    continue
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + TIMEOUT))
  while ours "$pid" "$name" && ((SECONDS < deadline)); do sleep 0.2; done
  if ours "$pid" "$name"; then
    log "$name (pid $pid) ignored TERM for ${TIMEOUT}s: KILL"
    kill -KILL "$pid" 2>/dev/null || true
    while ours "$pid" "$name"; do sleep 0.1; done
  fi
  log "stopped $name (pid $pid)"
done

# Guard against a mis-set variable wiping something that is not our state dir.
if [[ -d "$STATE" ]]; then
  [[ -d "$STATE/pids" || -f "$STATE/admin.kubeconfig" || -z "$(ls -A "$STATE")" ]] ||
    { echo "[down] refusing to remove $STATE: does not look like a cluster state dir" >&2; exit 1; }
  rm -rf "$STATE"
  log "removed $STATE"
fi
