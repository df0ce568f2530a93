#!/usr/bin/env bash
# Starts a throwaway Kubernetes control plane on loopback: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok (fake nodes, no kubelet, no image pulls), and
# with JUKINET_REAL_NODE=1 also a real worker node (node.sh: containerd, kubelet, kube-proxy,
# CoreDNS, a StorageClass) for the pods whose behaviour matters.
# Binaries come from build.sh's cache. Every process's PID goes to $STATE/pids/<name>.pid and its
# output to $STATE/logs/<name>.log; down.sh stops exactly those.
#
# Idempotent: if the recorded processes are alive and the apiserver is ready it returns at once;
# if some died (crash, kill -9, reboot) it stops the rest, wipes the state and starts afresh.
# Env: see env.sh (cache/state dirs, ports, JUKINET_KWOK_NODES) and
#   JUKINET_UP_TIMEOUT  seconds to wait for each readiness step (default 60)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
# shellcheck source=env.sh
source "$HERE/env.sh"
TIMEOUT="${JUKINET_UP_TIMEOUT:-60}"
REAL_NODE="${JUKINET_REAL_NODE:-0}"
BIN="$CACHE/bin"
PKI="$STATE/pki"
ADMIN_KC="$STATE/admin.kubeconfig"
T0=$(date +%s)

log() { printf '[up %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[up] ERROR: %s\n' "$*" >&2; exit 1; }

for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl; do
  [[ -x "$BIN/$b" ]] || die "$BIN/$b missing: run tests/cluster/build.sh first"
done

# Alive = pid file exists, the process exists and it runs our binary (pids get reused).
alive() { # name
  local pid
  pid="$(cat "$STATE/pids/$1.pid" 2>/dev/null)" || return 1
  [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$BIN/$1 "
}
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

apiserver_ready() {
  [[ -f "$PKI/admin.crt" ]] &&
    [[ "$(curl -sf --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
      "https://127.0.0.1:$APISERVER_PORT/readyz" 2>/dev/null)" == ok ]]
}

# ------------------------------------------------------------------ already up?
if [[ -d "$STATE" ]]; then
  all=1
  for c in "${COMPONENTS[@]}"; do alive "$c" || { all=0; log "$c is not running"; }; done
  # A control plane started without the real node (its API server listens on loopback only)
  # cannot take one later: start afresh.
  if [[ "$REAL_NODE" == 1 ]] && ! { [[ -f "$STATE/real-node" ]] && bash "$HERE/node.sh" alive; }; then
    all=0; log "the real node is wanted but not running"
  fi
  if ((all)) && apiserver_ready; then
    log "cluster already running (state $STATE)"
    echo "export KUBECONFIG=$ADMIN_KC"
    exit 0
  fi
  log "stale or partial cluster: cleaning up and starting afresh"
  "$HERE/down.sh"
fi

mkdir -p "$STATE"/{pids,logs,pki,etcd,kwok}
chmod 700 "$STATE"

# ------------------------------------------------------------------ PKI (throwaway, 1 year)
log "generating certificates"
(
  cd "$PKI"
  exec 2>openssl.log # openssl is chatty; keep its output out of the way
  # EC P-256 keys: instant to generate, accepted by every component.
  ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
  ec ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 365 -subj "/CN=jukinet-local-ca" -out ca.crt
  sign() { # name subject extfile-content
    ec "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 365 \
      -extfile "$1.ext" -out "$1.crt"
  }
  # 10.96.0.1 is the kubernetes Service IP (first address of the service range).
  sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:10.199.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # system:masters bypasses RBAC: used by the tests, kube-controller-manager, the scheduler and kwok.
  sign admin "/O=system:masters/CN=jukinet-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  # Front-proxy client cert: with --requestheader-* set, the extension-apiserver-authentication
  # ConfigMap is complete, so the delegated authn of kcm/scheduler stops logging errors about it
  # (and aggregated APIs would work).
  sign front-proxy "/CN=front-proxy-client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  # Service-account token signing key pair (RSA: the most widely supported JWT algorithm).
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
  openssl pkey -in sa.key -pubout -out sa.pub
  chmod 600 ./*.key
)

b64() { base64 -w0 <"$1"; }
cat >"$ADMIN_KC" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: jukinet
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: jukinet-admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: jukinet
  context: {cluster: jukinet, user: jukinet-admin}
current-context: jukinet
EOF
chmod 600 "$ADMIN_KC"

# ------------------------------------------------------------------ helpers
start() { # name args...   (own session so a Ctrl-C in the caller's terminal doesn't kill it)
  local name=$1; shift
  setsid "$BIN/$name" "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name.pid"
  log "started $name (pid $!)"
}
wait_for() { # name description command...
  local name=$1 what=$2 deadline=$((SECONDS + TIMEOUT)); shift 2
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name" || ((SECONDS >= deadline)); then
      echo "[up] ERROR: $what: $( alive "$name" && echo "timed out after ${TIMEOUT}s" || echo "$name exited")" >&2
      echo "----- last lines of $STATE/logs/$name.log -----" >&2
      tail -n 40 "$STATE/logs/$name.log" >&2
      echo "[up] processes left running for inspection; run tests/cluster/down.sh to clean up" >&2
      exit 1
    fi
    sleep 0.5
  done
  log "$what ($((SECONDS))s)"
}
kc() { "$BIN/kubectl" --kubeconfig "$ADMIN_KC" "$@"; }
https_ok() { curl -sfk --max-time 3 "https://127.0.0.1:$1/healthz" | grep -qx ok; }

# ------------------------------------------------------------------ etcd
# --unsafe-no-fsync: the data is throwaway and fsync dominates apiserver write latency.
start etcd --name jukinet --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "jukinet=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
  --unsafe-no-fsync --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) --log-level warn
wait_for etcd "etcd healthy" bash -c "curl -sf --max-time 3 http://127.0.0.1:$ETCD_PORT/health | grep -q '\"health\":\"true\"'"

# ------------------------------------------------------------------ kube-apiserver
# Without the real node: loopback only, and --endpoint-reconciler-type none (Endpoints validation
# rejects a loopback advertise address every 10s; fake pods dial nothing). With it: the real node
# reaches the API server at the host end of its veth (node.sh's 10.199.0.1), which is also the
# address real pods get behind the default/kubernetes Service.
if [[ "$REAL_NODE" == 1 ]]; then
  api_net=(--bind-address 0.0.0.0 --advertise-address 10.199.0.1 --endpoint-reconciler-type lease)
  touch "$STATE/real-node"
else
  api_net=(--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --endpoint-reconciler-type none)
fi
start kube-apiserver \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  "${api_net[@]}" --secure-port "$APISERVER_PORT" \
  --cert-dir "$PKI" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --authorization-mode Node,RBAC --allow-privileged=true \
  --requestheader-client-ca-file "$PKI/ca.crt" --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$PKI/front-proxy.crt" --proxy-client-key-file "$PKI/front-proxy.key" \
  --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
  --kubelet-preferred-address-types InternalIP,Hostname \
  --profiling=false --v=1
wait_for kube-apiserver "kube-apiserver /readyz ok" apiserver_ready

# ------------------------------------------------------------------ controller-manager, scheduler
# Both use the admin kubeconfig. Higher client QPS than the defaults (20/30) because the project
# creates ~1,800 Deployments; with the defaults the controllers would lag minutes behind.
start kube-controller-manager \
  --kubeconfig "$ADMIN_KC" --authentication-kubeconfig "$ADMIN_KC" --authorization-kubeconfig "$ADMIN_KC" \
  --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --cert-dir "$PKI/kcm" \
  --controllers '*' --use-service-account-credentials \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --leader-elect=false --kube-api-qps 200 --kube-api-burst 400 --profiling=false --v=1

cat >"$STATE/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $ADMIN_KC
  qps: 200
  burst: 400
leaderElection:
  leaderElect: false
EOF
start kube-scheduler --config "$STATE/scheduler.yaml" \
  --authentication-kubeconfig "$ADMIN_KC" --authorization-kubeconfig "$ADMIN_KC" \
  --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --cert-dir "$PKI/scheduler" --v=1

# ------------------------------------------------------------------ kwok
# kwok needs Stage objects describing how fake nodes/pods evolve. We pass the same defaults that
# kwokctl uses (node-initialize, node-heartbeat-with-lease, pod-ready, pod-complete, pod-delete),
# copied verbatim from kwok's own module source, as a --config file (no Stage CRD needed).
#   pod-ready:    scheduled pods become Running/Ready (no image pull, no kubelet)
#   pod-complete: Running pods owned by a Job become Succeeded, so Jobs complete
#   pod-delete:   pods with a deletionTimestamp are really deleted (scale-down works)
KWOK_SRC="$CACHE/gomod/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
[[ -d "$KWOK_SRC" ]] || die "$KWOK_SRC missing: run tests/cluster/build.sh first"
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
  pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  echo "---"
  cat "$KWOK_SRC/$f"
done >"$STATE/kwok/stages.yaml"
# --cidr: pod IPs for fake pods; the default /24 would run out long before 2,000 pods per node.
# --node-lease-duration-seconds: kwok renews a Lease per node, as a kubelet would (kwokctl's default).
start kwok --kubeconfig "$ADMIN_KC" --config "$STATE/kwok/stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --cidr 10.128.0.0/12 --node-lease-duration-seconds 40 \
  --server-address "127.0.0.1:$KWOK_PORT" --node-port "$KWOK_PORT"

wait_for kube-controller-manager "kube-controller-manager healthy" https_ok "$KCM_PORT"
wait_for kube-scheduler "kube-scheduler healthy" https_ok "$SCHEDULER_PORT"
wait_for kwok "kwok healthy" bash -c "curl -sf --max-time 3 http://127.0.0.1:$KWOK_PORT/healthz | grep -qx ok"

# ------------------------------------------------------------------ fake nodes
# Nodes may set their status on create (that is how kubelets register), so capacity goes in here.
for ((i = 0; i < KWOK_NODES; i++)); do
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
    node-role.kubernetes.io/agent: ""
status:
  capacity: {cpu: "32", memory: 256Gi, pods: "2000"}
  allocatable: {cpu: "32", memory: 256Gi, pods: "2000"}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: $KUBE_VERSION
EOF
done | kc create -f - >/dev/null
node_ready() { kc wait --for=condition=Ready node -l type=kwok --timeout=2s; }
wait_for kwok "$KWOK_NODES fake node(s) Ready" node_ready
# The ServiceAccount admission plugin rejects pods until the controller-manager has created the
# namespace's default ServiceAccount; waiting here means tests can create pods right away.
wait_for kube-controller-manager "default ServiceAccount created" kc -n default get serviceaccount default

if [[ "$REAL_NODE" == 1 ]]; then
  bash "$HERE/node.sh" up || { echo "[up] ERROR: the real node did not start (see above); run tests/cluster/down.sh to clean up" >&2; exit 1; }
fi

log "cluster ready in $(($(date +%s) - T0))s (state $STATE)"
echo "export KUBECONFIG=$ADMIN_KC"
