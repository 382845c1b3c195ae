#!/usr/bin/env bash
# Installs sealvol's chart into the test cluster the way docs/operations.md
# tells a user to (section Install), with tests/e2e/values.yaml:
#   1. image: built and imported by scripts/k8s images
#   2. the driver namespace: deploy/examples/driver-namespace.yaml
#   3. Vault: none here (kms.uri=local:..., see the values file)
#   4. broker TLS: a kubernetes.io/tls Secret sealvol-broker-tls (own CA)
#   5. broker.issuer: the API server's issuer from its OIDC discovery
#   6. helm install sealvol deploy/helm/sealvol -n sealvol -f VALUES --wait
#
#   install.sh [install]   install (upgrade when installed)
#   install.sh uninstall   remove tenants' pods and PVCs, then the release
#   install.sh helm-path   print the pinned helm binary (built once)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/versions.env"
cache=${SEALVOL_K8S_CACHE:-/var/cache/sealvol-k8s}
state=${SEALVOL_K8S_STATE:-/var/lib/sealvol-k8s}
ns=sealvol-k8s
kubeconfig=$state/pki/admin.kubeconfig
release=sealvol
driver_ns=sealvol
values=$root/tests/e2e/values.yaml

inns() { nsenter --net="/run/netns/$ns" -- "$@"; }
kubectl_() { inns "$cache/bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
helm_path() {
  # The helm the deploy tests pin and build (tests/deploy/lib.sh).
  (source "$root/tests/deploy/lib.sh" && ensure_helm >&2 && echo "$HELM")
}
helm_() { inns "$(helm_path)" --kubeconfig "$kubeconfig" "$@"; }

broker_tls_secret() {
  kubectl_ -n "$driver_ns" get secret sealvol-broker-tls >/dev/null 2>&1 && return 0
  local d svc=$release-broker
  d=$(mktemp -d)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/ca.key" \
    -out "$d/ca.crt" -days 30 -subj "/CN=sealvol-broker-ca" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/tls.key" \
    -out "$d/tls.csr" -subj "/CN=$svc" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:%s.%s,DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
    "$svc" "$svc" "$driver_ns" "$svc" "$driver_ns" "$svc" "$driver_ns" >"$d/ext"
  openssl x509 -req -in "$d/tls.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -out "$d/tls.crt" -days 30 -extfile "$d/ext" 2>/dev/null
  kubectl_ -n "$driver_ns" create secret generic sealvol-broker-tls --type=kubernetes.io/tls \
    --from-file=tls.crt="$d/tls.crt" --from-file=tls.key="$d/tls.key" --from-file=ca.crt="$d/ca.crt" >/dev/null
  rm -rf "$d"
}

# The image keeps its tag (sealvol.test/sealvol:e2e) when the binary is
# rebuilt, so an upgrade leaves the spec alone and the running pods on the
# old image: replace every driver pod whose sealvol container runs another
# image than the one imported now.
restart_stale_pods() {
  local manifest config pod image stale=()
  manifest=$(ctr --address "$state/containerd/containerd.sock" -n k8s.io images ls \
    name==sealvol.test/sealvol:e2e | awk 'NR == 2 {print $3}')
  [[ -n $manifest ]] || return 0
  config=$(ctr --address "$state/containerd/containerd.sock" -n k8s.io content get "$manifest" |
    jq -r .config.digest)
  while read -r pod image; do
    [[ -n $pod && $image != "$config" ]] && stale+=("$pod")
  done < <(kubectl_ -n "$driver_ns" get pods -l app.kubernetes.io/name=sealvol -o \
    jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.containerStatuses[?(@.name=="sealvol")].imageID}{"\n"}{end}')
  ((${#stale[@]})) || return 0
  echo "install: replacing pods of an older sealvol image: ${stale[*]}" >&2
  kubectl_ -n "$driver_ns" delete pod "${stale[@]}" --wait=true --timeout=120s >/dev/null
  kubectl_ -n "$driver_ns" rollout status deployment/"$release"-controller --timeout=180s >/dev/null
}

install() {
  local t=$SECONDS issuer
  kubectl_ apply -f "$root/deploy/examples/driver-namespace.yaml" >/dev/null
  broker_tls_secret
  issuer=$(kubectl_ get --raw /.well-known/openid-configuration | jq -r .issuer)
  [[ -n $issuer && $issuer != null ]] || { echo "install: no issuer in the OIDC discovery" >&2; exit 1; }
  # The node plugin's state directory: Bidirectional mount propagation needs
  # a shared mount, which / is not here; a bind mount of the cluster's own
  # directory, made shared (undone by scripts/k8s down).
  local node_state=$state/node-state
  mkdir -p "$node_state"
  if ! findmnt -n -o PROPAGATION --target "$node_state" | grep -q shared ||
    [[ $(findmnt -n -o TARGET --target "$node_state") != "$node_state" ]]; then
    mount --bind "$node_state" "$node_state"
    mount --make-shared "$node_state"
  fi
  helm_ upgrade --install "$release" "$root/deploy/helm/sealvol" -n "$driver_ns" -f "$values" \
    --set broker.issuer="$issuer" --set node.stateDir="$node_state" \
    --wait --timeout 5m >/dev/null || {
    kubectl_ -n "$driver_ns" get pods -o wide >&2
    kubectl_ -n "$driver_ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 >&2
    echo "install: helm install failed" >&2
    exit 1
  }
  restart_stale_pods
  # (The DaemonSet is OnDelete, which rollout status does not follow.)
  kubectl_ -n "$driver_ns" wait --for=condition=Ready pod -l app.kubernetes.io/component=node \
    --timeout=120s >/dev/null
  # The kubelet has registered the driver once CSINode lists it.
  local i
  for ((i = 0; i < 120; i++)); do
    kubectl_ get csinode -o jsonpath='{.items[*].spec.drivers[*].name}' 2>/dev/null |
      grep -qw sealvol.csi.dev && break
    sleep 0.5
  done
  ((i < 120)) || { echo "install: the kubelet never registered sealvol.csi.dev" >&2; exit 1; }
  echo "install: sealvol installed in $((SECONDS - t)) s (issuer $issuer)" >&2
}

uninstall() {
  local n
  for n in $(kubectl_ get ns -o jsonpath='{.items[*].metadata.name}'); do
    case $n in kube-*|default|"$driver_ns") continue ;; esac
    kubectl_ delete ns "$n" --wait=true --timeout=120s >/dev/null 2>&1 || true
  done
  kubectl_ delete pods -n default --all --wait=true --timeout=60s >/dev/null 2>&1 || true
  kubectl_ delete pv --all --wait=true --timeout=60s >/dev/null 2>&1 || true
  helm_ uninstall "$release" -n "$driver_ns" --wait --timeout 120s >/dev/null 2>&1 || true
  kubectl_ delete ns "$driver_ns" --wait=true --timeout=120s >/dev/null 2>&1 || true
}

case ${1:-install} in
  install) install ;;
  uninstall) uninstall ;;
  helm-path) helm_path ;;
  *) echo "install.sh: unknown command '$1' (install, uninstall, helm-path)" >&2; exit 2 ;;
esac
