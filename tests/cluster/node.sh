#!/usr/bin/env bash
# The local cluster's real worker node: containerd + runc + the bridge CNI plugin, a kubelet and
# kube-proxy, all in a network namespace of their own (so kube-proxy's iptables rules and the pod
# bridge live and die with it), cluster DNS (CoreDNS as a real pod at 10.96.0.10) and a default
# StorageClass whose claims really bind (jukinet-local, provisioned by node/local-volumes).
#
#   node.sh up     called by up.sh when JUKINET_REAL_NODE=1 (after the control plane is ready)
#   node.sh down   called by down.sh; removes every container, mount, veth, namespace and cgroup
#                  it made, whether or not `up` finished
#   node.sh alive  exit 0 when its processes run
#   node.sh import ARCHIVE...   import image archives into the node's containerd
#
# The node is tainted jukinet.io/real-node=true:NoSchedule and labelled jukinet.io/real-node=true:
# a pod runs for real only when it tolerates the taint and selects the label; every other pod goes
# to the kwok node as before (fake, for scale). One real node per machine: the namespace, the
# addresses and the volume root are fixed.
# Needs root (namespaces, mounts, cgroups, iptables). See tests/cluster/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
# shellcheck source=env.sh
source "$HERE/env.sh"
BIN="$CACHE/bin"
PKI="$STATE/pki"
NODE_DIR="$STATE/node"
NS=jukinet-node
NODE_NAME=jukinet-node
HOST_VETH=jkn-host HOST_IP=10.199.0.1
NODE_VETH=jkn-node NODE_IP=10.199.0.2
POD_CIDR=10.244.0.0/24
DNS_IP=10.96.0.10
VOLUME_ROOT=/var/lib/jukinet/local-volumes
CGROUP_ROOT=/jukinet
TIMEOUT="${JUKINET_UP_TIMEOUT:-60}"

log() { printf '[node %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[node] ERROR: %s\n' "$*" >&2; exit 1; }
kc() { "$BIN/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }
in_ns() { nsenter --net="/run/netns/$NS" "$@"; }
ours() { # pid name
  [[ -r "/proc/$1/cmdline" ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF "$2"
}

stop_pid() { # name binary-path
  local f="$STATE/pids/$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && ours "$pid" "$2"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do ours "$pid" "$2" || break; sleep 0.2; done
    ours "$pid" "$2" && kill -KILL "$pid" 2>/dev/null || true
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$f"
}

# ------------------------------------------------------------------ down
node_down() {
  # The kubelet first (it would restart what we kill), then every container, then containerd.
  stop_pid kubelet "$BIN/kubelet"
  stop_pid kube-proxy "$BIN/kube-proxy"
  stop_pid local-volumes "$BIN/local-volumes"
  local sock="$NODE_DIR/containerd/containerd.sock" pod_netns=""
  if [[ -S "$sock" ]]; then
    local ids
    # The pods' network namespaces (bind mounts in /var/run/netns that containerd 1.6 leaves
    # behind when it is stopped), read from the sandboxes' specs.
    for id in $(ctr --address "$sock" -n k8s.io containers ls -q 2>/dev/null || true); do
      pod_netns+=" $(ctr --address "$sock" -n k8s.io containers info "$id" 2>/dev/null |
        grep -o '/var/run/netns/cni-[0-9a-f-]*' | sort -u | tr '\n' ' ' || true)"
    done
    ids="$(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null || true)"
    for id in $ids; do ctr --address "$sock" -n k8s.io tasks kill -s KILL "$id" >/dev/null 2>&1 || true; done
    sleep 1
    for id in $ids; do ctr --address "$sock" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true; done
  fi
  stop_pid containerd "containerd --config $NODE_DIR/containerd/config.toml"
  for n in $pod_netns; do ip netns del "$(basename "$n")" 2>/dev/null || true; done
  # Whatever runc still runs under our cgroup root (a container whose shim died).
  for cg in /sys/fs/cgroup/*"$CGROUP_ROOT"; do
    [[ -d "$cg" ]] || continue
    find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  done
  # Mounts under the node's directories (secrets' tmpfs, overlay rootfs, shm), deepest first.
  if [[ -d "$NODE_DIR" ]]; then
    awk -v d="$NODE_DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  for cg in /sys/fs/cgroup/*"$CGROUP_ROOT"; do
    [[ -d "$cg" ]] || continue
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null && log "deleted network namespace $NS" || true
  ip link del "$HOST_VETH" 2>/dev/null || true
  ip route del "$POD_CIDR" 2>/dev/null || true
  # The node's volumes go with the cluster: its PVs are gone with etcd's data (a test may have
  # mounted over one: tests/src/real_node.rs FullVolume).
  awk -v d="$VOLUME_ROOT/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$VOLUME_ROOT"
  [[ -d "$NODE_DIR" ]] && rm -rf "$NODE_DIR"
  kc delete node "$NODE_NAME" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  return 0
}

# ------------------------------------------------------------------ up: checks
preflight() {
  [[ "$(id -u)" -eq 0 ]] || die "the real node needs root (network namespaces, mounts, cgroups)"
  for b in kubelet kube-proxy coredns local-volumes; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b missing: run tests/cluster/build.sh"
  done
  for f in "$CACHE/images/pause.tar" "$CACHE/images/coredns.tar" "$CACHE/images/busybox.tar"; do
    [[ -s "$f" ]] || die "$f missing: run tests/cluster/build.sh"
  done
  for c in containerd containerd-shim-runc-v2 runc ctr iptables nsenter; do
    command -v "$c" >/dev/null || die "$c not found: run scripts/install-deps"
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
    die "CNI plugins missing in /usr/lib/cni: run scripts/install-deps (containernetworking-plugins)"
  local probe=/sys/fs/cgroup/memory/jukinet-probe
  mkdir -p "$probe" 2>/dev/null && rmdir "$probe" ||
    die "cannot create a memory cgroup (/sys/fs/cgroup/memory, cgroup v1): this machine cannot run containers"
  modprobe overlay 2>/dev/null || true
  modprobe br_netfilter 2>/dev/null || true
  grep -qw overlay /proc/filesystems || die "overlayfs is not available: this machine cannot run containers"
}

# ------------------------------------------------------------------ up: network
network_up() {
  ip netns add "$NS"
  ip link add "$HOST_VETH" type veth peer name "$NODE_VETH"
  ip link set "$NODE_VETH" netns "$NS"
  ip addr add "$HOST_IP/30" dev "$HOST_VETH"
  ip link set "$HOST_VETH" up
  in_ns ip link set lo up
  in_ns ip addr add "$NODE_IP/30" dev "$NODE_VETH"
  in_ns ip link set "$NODE_VETH" up
  in_ns ip route add default via "$HOST_IP"
  # The host (the API server's service proxy, the tests) reaches pod IPs through the node.
  ip route add "$POD_CIDR" via "$NODE_IP"
  in_ns sysctl -qw net.ipv4.ip_forward=1
  # Services between pods on the same bridge need bridged traffic to pass iptables.
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] ||
    die "br_netfilter is not loaded: Services between pods cannot work"
  in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1
  log "network namespace $NS: node $NODE_IP, host $HOST_IP, pods $POD_CIDR"
}

# ------------------------------------------------------------------ up: containerd
containerd_up() {
  local d="$NODE_DIR/containerd"
  mkdir -p "$d/root" "$d/state" "$NODE_DIR/cni/net.d"
  cat >"$NODE_DIR/cni/net.d/10-jukinet.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "jukinet",
  "plugins": [
    {"type": "bridge", "bridge": "jkn-cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "10.244.0.1"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$NODE_DIR/cni/ipam"}},
    {"type": "loopback"}
  ]
}
EOF
  # restrict_oom_score_adj: this machine refuses the sandbox's oom_score_adj of -998.
  cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
[grpc]
  address = "$d/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
EOF
  setsid nsenter --net="/run/netns/$NS" containerd --config "$d/config.toml" \
    >"$STATE/logs/containerd.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/containerd.pid"
  local deadline=$((SECONDS + TIMEOUT))
  until ctr --address "$d/containerd.sock" version >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { tail -n 30 "$STATE/logs/containerd.log" >&2; die "containerd did not start"; }
    sleep 0.3
  done
  log "containerd ready"
  import_images "$CACHE/images/pause.tar" "$CACHE/images/coredns.tar" "$CACHE/images/busybox.tar"
}

# Imports OCI/Docker archives into the node's containerd, where the kubelet finds them (pods use
# imagePullPolicy IfNotPresent or Never: nothing can be pulled here).
import_images() {
  local f
  for f in "$@"; do
    ctr --address "$NODE_DIR/containerd/containerd.sock" -n k8s.io images import --no-unpack=false "$f" >/dev/null
    log "imported $(basename "$f")"
  done
}

# ------------------------------------------------------------------ up: kubelet, kube-proxy
client_cert() { # name subject -> writes $PKI/<name>.{key,crt}
  (
    cd "$PKI"
    exec 2>>openssl.log
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 365 \
      -extfile "$1.ext" -out "$1.crt"
    chmod 600 "$1.key"
  )
}
kubeconfig() { # name -> path (the node reaches the API server over the veth)
  local kc_path="$NODE_DIR/$1.kubeconfig"
  cat >"$kc_path" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: jukinet
  cluster: {server: "https://$HOST_IP:$APISERVER_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$PKI/$1.crt", client-key: "$PKI/$1.key"}
contexts:
- name: jukinet
  context: {cluster: jukinet, user: $1}
current-context: jukinet
EOF
  echo "$kc_path"
}

kubelet_up() {
  mkdir -p "$NODE_DIR/kubelet"
  # The Node authorizer admits system:node:<name> in group system:nodes.
  client_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 on these machines; no systemd; swap may be on.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
failSwapOn: false
containerRuntimeEndpoint: unix://$NODE_DIR/containerd/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
address: $NODE_IP
healthzBindAddress: 127.0.0.1
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $NODE_DIR/resolv.conf
registerWithTaints:
- {key: jukinet.io/real-node, value: "true", effect: NoSchedule}
# The machine's disk is shared with the builds: no image or eviction housekeeping here.
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
serializeImagePulls: false
maxPods: 60
EOF
  # The kubelet wants its cgroup root in every v1 hierarchy; a new cpuset starts empty.
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -f "$h/cgroup.procs" ]] || continue
    mkdir -p "$h${CGROUP_ROOT#/}"
    if [[ -f "$h/cpuset.cpus" ]]; then
      cat "$h/cpuset.cpus" >"$h${CGROUP_ROOT#/}/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h${CGROUP_ROOT#/}/cpuset.mems"
    fi
  done
  # Pods with dnsPolicy Default (CoreDNS itself) get no upstream: nothing outside is reachable.
  printf 'nameserver %s\n' "$DNS_IP" >"$NODE_DIR/resolv.conf"
  setsid nsenter --net="/run/netns/$NS" "$BIN/kubelet" --config "$NODE_DIR/kubelet.yaml" \
    --kubeconfig "$(kubeconfig kubelet)" --root-dir "$NODE_DIR/kubelet" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --node-labels "jukinet.io/real-node=true" --v=1 \
    >"$STATE/logs/kubelet.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/kubelet.pid"
  local deadline=$((SECONDS + TIMEOUT * 2))
  until kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s >/dev/null 2>&1; do
    if ((SECONDS >= deadline)) || ! ours "$(cat "$STATE/pids/kubelet.pid")" "$BIN/kubelet"; then
      grep -E '^E|failed|error' "$STATE/logs/kubelet.log" | tail -n 20 >&2
      die "node $NODE_NAME did not become Ready (log: $STATE/logs/kubelet.log)"
    fi
    sleep 1
  done
  log "node $NODE_NAME Ready"
}

kube_proxy_up() {
  # The default binding system:node-proxier names the user system:kube-proxy.
  client_cert kube-proxy "/CN=system:kube-proxy"
  cat >"$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection: {kubeconfig: "$(kubeconfig kube-proxy)"}
# Leave the machine-wide conntrack sysctls alone.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  setsid nsenter --net="/run/netns/$NS" "$BIN/kube-proxy" --config "$NODE_DIR/kube-proxy.yaml" --v=1 \
    >"$STATE/logs/kube-proxy.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/kube-proxy.pid"
  local deadline=$((SECONDS + TIMEOUT))
  until in_ns curl -sf --max-time 2 http://127.0.0.1:10256/healthz >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { tail -n 30 "$STATE/logs/kube-proxy.log" >&2; die "kube-proxy not healthy"; }
    sleep 0.5
  done
  log "kube-proxy healthy"
}

# ------------------------------------------------------------------ up: storage, DNS
storage_up() {
  setsid "$BIN/local-volumes" --kubeconfig "$STATE/admin.kubeconfig" --root "$VOLUME_ROOT" \
    --real-node "$NODE_NAME" >"$STATE/logs/local-volumes.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/local-volumes.pid"
  kc apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: jukinet-local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: jukinet.io/local-volumes
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
EOF
  log "StorageClass jukinet-local (default) served by local-volumes"
}

dns_up() {
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- {apiGroups: [""], resources: [services, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:1053 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 30
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      nodeSelector: {jukinet.io/real-node: "true"}
      tolerations: [{key: jukinet.io/real-node, operator: Exists, effect: NoSchedule}]
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: coredns
        image: $COREDNS_IMAGE
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 1053, protocol: UDP}
        - {name: dns-tcp, containerPort: 1053, protocol: TCP}
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 2}
        livenessProbe: {httpGet: {path: /health, port: 8080}}
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, targetPort: 1053, protocol: UDP}
  - {name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}
EOF
  local deadline=$((SECONDS + TIMEOUT * 2))
  until kc -n kube-system rollout status deploy/coredns --timeout=2s >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      kc -n kube-system get pods -o wide >&2 || true
      kc -n kube-system describe pods -l k8s-app=kube-dns 2>/dev/null | tail -n 25 >&2 || true
      die "CoreDNS did not become ready"
    fi
    sleep 1
  done
  log "CoreDNS ready at $DNS_IP"
}

node_up() {
  local t0=$SECONDS
  preflight
  node_down >/dev/null 2>&1 || true
  mkdir -p "$NODE_DIR" "$STATE/pids" "$STATE/logs"
  network_up
  containerd_up
  kubelet_up
  kube_proxy_up
  storage_up
  dns_up
  log "real node ready in $((SECONDS - t0))s"
}

node_alive() {
  local name
  for name in containerd kubelet kube-proxy local-volumes; do
    local pid
    pid="$(cat "$STATE/pids/$name.pid" 2>/dev/null)" || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
  done
}

# Gives an imported image a second name (a "new version" for program deliveries in tests).
tag_image() {
  ctr --address "$NODE_DIR/containerd/containerd.sock" -n k8s.io images tag --force "$1" "$2" >/dev/null
  log "tagged $1 as $2"
}

case "${1:-}" in
up) node_up ;;
alive) node_alive ;;
down) node_down ;;
import) shift; import_images "$@" ;;
tag) tag_image "$2" "$3" ;;
*) echo "usage: node.sh up|down|import ARCHIVE...|tag IMAGE NEW-NAME" >&2; exit 2 ;;
esac
