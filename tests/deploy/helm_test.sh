#!/usr/bin/env bash
# helm lint and helm template for every values example of the chart, then
# strict decoding of every rendered object (and of deploy/examples/) against
# the Kubernetes API types. Also proves the checker can fail: an unknown
# field, a wrong type and a mis-cased field in a rendered manifest must each
# be rejected.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ensure_helm
ensure_k8scheck
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

n=0
for values in $(values_examples); do
  name=$(basename "$values" .yaml)
  "$HELM" lint --strict --kube-version "$KUBE_VERSION" -f "$values" "$CHART" >"$work/lint.log" 2>&1 ||
    { cat "$work/lint.log"; die "helm lint -f $name"; }
  render "$values" "$work/$name.yaml"
  "$K8SCHECK" decode "$work/$name.yaml" >"$work/$name.objects" ||
    die "strict decoding of the chart rendered with $name"
  echo "ok   $name: $(tail -1 "$work/$name.objects")"
  n=$((n + 1))
done
((n >= 3)) || die "expected at least 3 values examples, found $n"

# A values file that contradicts itself must not render.
printf 'broker:\n  tls:\n    secretName: ""\n' >"$work/no-secret.yaml"
if "$HELM" template sealvol "$CHART" --kube-version "$KUBE_VERSION" -f "$work/no-secret.yaml" >/dev/null 2>&1; then
  die "chart rendered broker TLS without a Secret or cert-manager"
fi

# CSIDriver.spec.serviceAccountTokenInSecrets only for API servers that know
# it: a 1.34 kube-apiserver refuses the CSIDriver with the field ("strict
# decoding error: unknown field"), so the chart must leave it out there.
csidriver_of() {
  "$HELM" template sealvol "$CHART" --kube-version "$1" -s templates/csidriver.yaml ||
    die "helm template CSIDriver for Kubernetes $1"
}
csidriver_of 1.35.0 | grep -q '^  serviceAccountTokenInSecrets: true$' ||
  die "CSIDriver for Kubernetes 1.35 lacks serviceAccountTokenInSecrets: true"
for v in 1.34.4 1.30.0; do
  if csidriver_of "$v" | grep -q serviceAccountTokenInSecrets; then
    die "CSIDriver for Kubernetes $v has serviceAccountTokenInSecrets, which that API server refuses"
  fi
done
echo "ok   CSIDriver serviceAccountTokenInSecrets rendered for 1.35, left out for 1.34 and 1.30"

# Snapshots: the csi-snapshotter sidecar by default and none when disabled;
# the VolumeSnapshotClass only where the API server serves the snapshot API.
snap_api=snapshot.storage.k8s.io/v1/VolumeSnapshotClass
"$HELM" template sealvol "$CHART" --kube-version "$KUBE_VERSION" -s templates/controller.yaml |
  grep -q '^        - name: csi-snapshotter$' || die "no csi-snapshotter sidecar by default"
if "$HELM" template sealvol "$CHART" --kube-version "$KUBE_VERSION" -s templates/controller.yaml \
  --set snapshots.enabled=false | grep -q csi-snapshotter; then
  die "csi-snapshotter rendered with snapshots.enabled=false"
fi
"$HELM" template sealvol "$CHART" --kube-version "$KUBE_VERSION" --api-versions "$snap_api" \
  -s templates/volumesnapshotclass.yaml >"$work/vsc.yaml" || die "helm template VolumeSnapshotClass"
grep -q '^driver: sealvol.csi.dev$' "$work/vsc.yaml" && grep -q '^deletionPolicy: Delete$' "$work/vsc.yaml" ||
  { cat "$work/vsc.yaml"; die "VolumeSnapshotClass lacks the driver or deletionPolicy Delete"; }
if "$HELM" template sealvol "$CHART" --kube-version "$KUBE_VERSION" | grep -q '^kind: VolumeSnapshotClass$'; then
  die "VolumeSnapshotClass rendered for an API server without the snapshot API"
fi
if "$HELM" template sealvol "$CHART" --kube-version "$KUBE_VERSION" \
  --set snapshots.volumeSnapshotClass.deletionPolicy=Forget >/dev/null 2>&1; then
  die "chart accepted deletionPolicy Forget"
fi
echo "ok   snapshots: csi-snapshotter sidecar, VolumeSnapshotClass only with the snapshot API"

# values.schema.json: a misspelled or mistyped value must not be ignored.
for bad in 'brokr.port=9443' 'broker.port=not-a-port' 'storageClasses[0].kmsKeyTemplate=shared-kek'; do
  if "$HELM" template sealvol "$CHART" --kube-version "$KUBE_VERSION" --set "$bad" >/dev/null 2>&1; then
    die "chart accepted the invalid value $bad"
  fi
  echo "ok   values schema rejects $bad"
done

# The standalone examples decode strictly too.
"$K8SCHECK" decode "$SEALVOL_SOURCE_DIR"/deploy/examples/*.yaml >"$work/examples.objects" ||
  die "strict decoding of deploy/examples"
echo "ok   examples: $(tail -1 "$work/examples.objects")"

# Tenant workloads of the examples satisfy their namespace's Pod Security
# level (restricted); and a workload that drifts from it is caught.
"$K8SCHECK" psa "$SEALVOL_SOURCE_DIR"/deploy/examples/*.yaml || die "Pod Security of deploy/examples"
sed 's/allowPrivilegeEscalation: false/allowPrivilegeEscalation: true/' \
  "$SEALVOL_SOURCE_DIR/deploy/examples/tenant-training-job.yaml" >"$work/job.yaml"
if "$K8SCHECK" psa "$SEALVOL_SOURCE_DIR/deploy/examples/tenant-namespace.yaml" "$work/job.yaml" >/dev/null 2>&1; then
  die "Pod Security check accepted allowPrivilegeEscalation: true in a restricted namespace"
fi
echo "ok   Pod Security check rejects a tenant job with privilege escalation"

# The checker must reject what the API server would reject.
base=$work/default-values.yaml
expect_reject() {
  local what=$1 out=$work/mutant.yaml
  sed "$2" "$base" >"$out"
  cmp -s "$base" "$out" && die "mutation '$what' changed nothing"
  if "$K8SCHECK" decode "$out" >/dev/null 2>"$work/mutant.err"; then
    die "checker accepted a manifest with $what"
  fi
  echo "ok   rejected $what: $(tail -1 "$work/mutant.err" | sed 's/^ *//')"
}
expect_reject "an unknown field" 's/^  attachRequired: false/  attachRequired: false\n  attachRequierd: true/'
expect_reject "a wrong type" 's/^  replicas: \([0-9]*\)/  replicas: "\1"/'
expect_reject "a mis-cased field" 's/^  podInfoOnMount: true/  PodInfoOnMount: true/'
expect_reject "a duplicate field" 's/^  podInfoOnMount: true/  podInfoOnMount: true\n  podInfoOnMount: false/'
expect_reject "an unknown kind" 's/^kind: CSIDriver/kind: CSIDrivr/'

echo "deploy helm: $n values examples linted, rendered and strictly decoded"
