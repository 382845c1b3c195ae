#!/usr/bin/env bash
# Scenario 10: the broker's JWKS comes from the API server, as the chart
# configures it by default (broker.jwks.jwksUrl = the API server's
# /openid/v1/jwks, the document its OIDC discovery names), fetched with the
# controller's own CA and token; and a real kubelet-requested pod token
# verifies against it. Also pins why the broker must accept
# application/jwk-set+json: the API server answers 406 to a client that
# accepts only application/json.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

cpod=$(controller_pod)
args=$(kubectl -n "$driver_ns" get pod "$cpod" -o jsonpath='{.spec.containers[?(@.name=="sealvol")].args}')
jq -e 'index("--jwks-url=https://kubernetes.default.svc/openid/v1/jwks") != null' <<<"$args" >/dev/null ||
  fail "the controller does not take the chart's default JWKS URL: $args"
jq -e 'index("--token-review") != null' <<<"$args" >/dev/null || fail "TokenReview is not on: $args"

# The discovery document names the JWKS the broker fetches.
kubectl get --raw /.well-known/openid-configuration >"$work/discovery.json"
issuer=$(jq -r .issuer "$work/discovery.json")
jq -e --arg i "$issuer" 'index("--issuer=" + $i) != null' <<<"$args" >/dev/null ||
  fail "the broker's --issuer is not the API server's issuer $issuer"
[[ $(jq -r .jwks_uri "$work/discovery.json") == */openid/v1/jwks ]] ||
  fail "discovery names another JWKS: $(cat "$work/discovery.json")"
kubectl get --raw /openid/v1/jwks >"$work/jwks.json"

# The API server's content negotiation, seen from inside the cluster's network.
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
token=$(kubectl -n "$driver_ns" create token sealvol-controller --duration=10m)
code() {
  "$src/scripts/k8s" exec curl -s -o /dev/null -w '%{http_code}' --cacert "$state/pki/ca.crt" \
    -H "Authorization: Bearer $token" -H "Accept: $1" "$server/openid/v1/jwks"
}
[[ $(code application/json) == 406 ]] || fail "expected 406 for Accept: application/json"
[[ $(code 'application/jwk-set+json, application/json') == 200 ]] ||
  fail "expected 200 for the broker's Accept header"

# A pod token the kubelet requested for the CSI driver (audience sealvol)
# verifies with those keys: a pod of this test mounts a volume.
new_ns team-a-jwks
pvc team-a-jwks data sealvol-ext4 64Mi
pod team-a-jwks p data "sleep 100000"
wait_running team-a-jwks p 180
uid=$(kubectl -n team-a-jwks get pod p -o jsonpath='{.metadata.uid}')
audit | jq -s -e --arg u "$uid" 'any(.[]; .decision == "grant" and .pod_uid == $u)' >/dev/null ||
  fail "no grant for the pod"
kid=$(jq -r '.keys[0].kid' "$work/jwks.json")
# (The log to a file first: grep -q stopping early would fail the pipe.)
kubectl -n "$driver_ns" logs "$cpod" -c sealvol >"$work/controller.log"
grep -q "GET https://kubernetes.default.svc/openid/v1/jwks -> 200" "$work/controller.log" ||
  fail "the controller log does not show its JWKS fetch from the API server"
say "10: broker verifies pod tokens with the API server's JWKS (kid ${kid:0:12}..., issuer $issuer)"
