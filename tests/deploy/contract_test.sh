#!/usr/bin/env bash
# The chart's contract with the driver: for every values example, the
# rendered manifests pass every check of `k8scheck contract` (see
# tests/deploy/k8scheck/contract.go and docs/operations.md): the flags the
# chart passes to `sealvol controller` and `sealvol node` are flags of the
# real binary (their --help), the tokenRequests audience equals the broker's
# --audience and the node token's audience, and the fields the driver
# relies on are set. Then it proves the check can fail.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ -x ${SEALVOL_BIN:-} ]] || die "SEALVOL_BIN is not an executable (run from ctest)"
ensure_helm
ensure_k8scheck
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The real flags. A binary without these subcommands fails here, loudly.
"$SEALVOL_BIN" controller --help >"$work/controller.help" 2>&1 ||
  { cat "$work/controller.help"; die "'sealvol controller --help' failed"; }
"$SEALVOL_BIN" node --help >"$work/node.help" 2>&1 ||
  { cat "$work/node.help"; die "'sealvol node --help' failed"; }
for sub in controller node; do
  flags=$("$K8SCHECK" helpflags "$work/$sub.help") ||
    { cat "$work/$sub.help"; die "'sealvol $sub --help' lists no flags: is the subcommand registered?"; }
  echo "sealvol $sub flags: $(echo $flags)"
done
check() {
  # shellcheck disable=SC2046
  "$K8SCHECK" contract --controller-help "$work/controller.help" \
    --node-help "$work/node.help" $(contract_args "$1") "$2"
}

n=0
for values in $(values_examples); do
  name=$(basename "$values" .yaml)
  render "$values" "$work/$name.yaml"
  check "$values" "$work/$name.yaml" >"$work/out" 2>&1 ||
    { cat "$work/out"; die "contract broken with $name"; }
  echo "ok   $name: $(tail -1 "$work/out")"
  n=$((n + 1))
done

# The checks must be able to fail.
defaults=$CHART/ci/default-values.yaml
expect_broken() {
  local what=$1; shift
  "$HELM" template sealvol "$CHART" --namespace sealvol --kube-version "$KUBE_VERSION" \
    -f "$defaults" "$@" >"$work/broken.yaml" || die "helm template ($what)"
  if check "$defaults" "$work/broken.yaml" >"$work/out" 2>&1; then
    die "contract check passed although $what"
  fi
  echo "ok   caught: $what: $(grep -m1 '^  ' "$work/out" | sed 's/^ *//')"
}
# A flag the binary does not have.
sed 's|^            - --audit-log=|            - --no-such-flag=1\n            - --audit-log=|' "$work/default-values.yaml" >"$work/extra-flag.yaml"
if check "$defaults" "$work/extra-flag.yaml" >"$work/out" 2>&1; then
  die "contract check accepted a flag the binary lacks"
fi
echo "ok   caught: an unknown controller flag: $(grep -m1 '^  ' "$work/out" | sed 's/^ *//')"
# The CSIDriver's audience and the broker's must not drift apart.
sed 's|^    - audience: "sealvol"|    - audience: "not-sealvol"|' "$work/default-values.yaml" >"$work/drift.yaml"
cmp -s "$work/default-values.yaml" "$work/drift.yaml" && die "audience mutation changed nothing"
if check "$defaults" "$work/drift.yaml" >"$work/out" 2>&1; then
  die "contract check accepted a tokenRequests audience different from --audience"
fi
echo "ok   caught: audience drift: $(grep -m1 '^  ' "$work/out" | sed 's/^ *//')"
# A node that could not verify the broker's TLS certificate.
grep -v -- '- --broker-ca=' "$work/default-values.yaml" >"$work/no-ca.yaml"
cmp -s "$work/default-values.yaml" "$work/no-ca.yaml" && die "default values render no --broker-ca"
if check "$defaults" "$work/no-ca.yaml" >"$work/out" 2>&1; then
  die "contract check accepted a TLS broker with nodes lacking --broker-ca"
fi
echo "ok   caught: TLS without a CA on the node: $(grep -m1 '^  ' "$work/out" | sed 's/^ *//')"
expect_broken "the controller has a single replica" --set controller.replicas=1
echo "deploy contract: $n values examples match the binary's flags and the driver's contract"
