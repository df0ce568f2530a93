# Sourceable: `source tests/cluster/env.sh` puts the cluster's kubectl/helm first on PATH and points
# KUBECONFIG at the local cluster started by up.sh. Also sourced by up.sh and down.sh, so every
# location and port is defined here once. Override any of them through the environment.
#
#   JUKINET_CLUSTER_CACHE  built binaries + Go caches   (default ~/.cache/jukinet/cluster)
#   JUKINET_CLUSTER_STATE  certs, etcd data, pids, logs  (default ~/.cache/jukinet/cluster-state)
#   JUKINET_ETCD_PORT / JUKINET_ETCD_PEER_PORT / JUKINET_APISERVER_PORT /
#   JUKINET_KCM_PORT / JUKINET_SCHEDULER_PORT / JUKINET_KWOK_PORT   loopback ports (see below)
#   JUKINET_KWOK_NODES     number of fake nodes (default 1)

CACHE="${JUKINET_CLUSTER_CACHE:-$HOME/.cache/jukinet/cluster}"
STATE="${JUKINET_CLUSTER_STATE:-$HOME/.cache/jukinet/cluster-state}"

# Non-default ports so a real cluster / other services on this machine do not collide.
ETCD_PORT="${JUKINET_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${JUKINET_ETCD_PEER_PORT:-23800}"
APISERVER_PORT="${JUKINET_APISERVER_PORT:-26443}"
KCM_PORT="${JUKINET_KCM_PORT:-21257}"
SCHEDULER_PORT="${JUKINET_SCHEDULER_PORT:-21259}"
KWOK_PORT="${JUKINET_KWOK_PORT:-21247}"
KWOK_NODES="${JUKINET_KWOK_NODES:-1}"

case ":$PATH:" in
*":$CACHE/bin:"*) ;;
*) PATH="$CACHE/bin:$PATH" ;;
esac
KUBECONFIG="$STATE/admin.kubeconfig"
export CACHE STATE PATH KUBECONFIG
