#!/usr/bin/env bash
# Scenario 9: TokenReview. A token bound to a pod (TokenRequest, audience
# sealvol) is granted by the broker while the pod exists; once the pod is
# deleted the API server stops authenticating it and the broker refuses it
# (token_revoked, audited), although its signature and expiry are still
# good. kube-apiserver caches successful TokenReviews for 10 s, so the
# refusal may come up to that late: the window docs/attestation.md states.
# The token is presented through the node plugin's CSI socket, as the
# kubelet would (sealvol csi publish).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
sv=${SEALVOL_BIN:?run from ctest (SEALVOL_BIN)}
new_ns team-a-review
pvc team-a-review data sealvol-ext4 64Mi
# The volume stays staged on the node through a pod that keeps using it.
pod team-a-review keeper data "sleep 100000"
wait_running team-a-review keeper 180
pv=$(pv_of team-a-review data)
vol=$(handle_of "$pv")
# A second pod, whose token is the one under test.
pod team-a-review victim data "sleep 100000"
wait_running team-a-review victim 180
uid=$(kubectl -n team-a-review get pod victim -o jsonpath='{.metadata.uid}')
kubectl -n team-a-review create token default --audience sealvol --duration 10m \
  --bound-object-kind Pod --bound-object-name victim --bound-object-uid "$uid" >"$work/token"

csi_dir=/var/lib/kubelet/plugins/kubernetes.io/csi/sealvol.csi.dev
staging=""
for f in "$csi_dir"/*/vol_data.json; do
  jq -e --arg v "$vol" '.volumeHandle == $v' "$f" >/dev/null 2>&1 && staging=$(dirname "$f")/globalmount
done
[[ -n $staging ]] || fail "no kubelet staging directory for $vol"
contexts=()
while read -r kv; do contexts+=(--context "$kv"); done < <(
  kubectl get pv "$pv" -o json | jq -r '.spec.csi.volumeAttributes | to_entries[] | "\(.key)=\(.value)"')
target=/var/lib/kubelet/sealvol-e2e-review-$$
publish() {
  "$sv" csi --endpoint unix:///var/lib/kubelet/plugins/sealvol.csi.dev/csi.sock publish "$vol" \
    --staging-path "$staging" --target "$target" --pod team-a-review/victim --pod-uid "$uid" \
    --service-account default --token-file "$work/token" "${contexts[@]}"
}
unpublish() {
  "$sv" csi --endpoint unix:///var/lib/kubelet/plugins/sealvol.csi.dev/csi.sock unpublish "$vol" --target "$target"
}
mkdir -p "$target"
review_cleanup() {
  local rc=$?
  set +e
  unpublish >/dev/null 2>&1
  rmdir "$target" 2>/dev/null
  (exit $rc) # e2e_cleanup reads the test's status from $?
  e2e_cleanup
}
trap review_cleanup EXIT
publish >"$work/out" 2>&1 || fail "publish with the live pod's token refused: $(cat "$work/out")"
unpublish >/dev/null || fail "unpublish"
say "9: token of pod victim granted while the pod exists"

kubectl -n team-a-review delete pod victim --wait=true --timeout=60s >/dev/null
deleted=$SECONDS
refused_after=""
while ((SECONDS - deleted < 30)); do
  if publish >"$work/out" 2>&1; then
    unpublish >/dev/null || fail "unpublish"
  else
    grep -q token_revoked "$work/out" || fail "refused, but not token_revoked: $(cat "$work/out")"
    refused_after=$((SECONDS - deleted))
    break
  fi
  sleep 1
done
[[ -n $refused_after ]] || fail "the deleted pod's token was still granted 30 s after the pod was deleted"
((refused_after <= 15)) || fail "refused only after $refused_after s (the API server's cache is 10 s)"
audit | jq -s -e --arg u "$uid" 'any(.[]; .decision == "refuse" and .reason == "token_revoked" and .pod_uid == $u)' \
  >/dev/null || fail "the token_revoked refusal is not audited"
say "9: after the pod was deleted its token was refused (token_revoked) within $refused_after s"
