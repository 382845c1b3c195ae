#!/usr/bin/env bash
# deploy/vault/setup.sh against a real OpenBao dev server (scripts/openbao-dev):
# it must configure transit, kv-v2, kubernetes auth, the controller's and
# per-tenant roles and policies, be idempotent, and isolate tenants. There is
# no Kubernetes here, so the kubernetes-auth login itself cannot run; the
# test checks the auth config and role objects, and exercises each role's
# policy through a token created with exactly that policy. With real calls
# it proves that tenant A's policy can use A's KEK and cannot use B's
# (datakey, decrypt, rewrap, rotate, key metadata), that it has no access to
# the registry (where B's wrapped DEKs live: read, write, list, delete), and
# that the controller's policy serves both tenants and crypto-shreds.
#
# Uses VAULT_ADDR/VAULT_TOKEN when the suite already started a server,
# otherwise starts (and stops) a private OpenBao dev server (lib.sh
# ensure_bao says where the binary comes from). Everything it creates carries a unique
# prefix and is removed at the end, so it can share the server.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
setup=$SEALVOL_SOURCE_DIR/deploy/vault/setup.sh
command -v jq >/dev/null || die "jq is required"

# Without a server from the suite, start a private dev server (own port,
# own token; never the shared one, which other tests may be using).
server_pid=""
if [[ -z ${VAULT_ADDR:-} || -z ${VAULT_TOKEN:-} ]]; then
  ensure_bao
  "$BAO" version
  port=""
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    # Free when nothing accepts a connection there.
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { port=$p; break; }
  done
  [[ -n $port ]] || die "no free port"
  VAULT_ADDR=http://127.0.0.1:$port
  VAULT_TOKEN=root-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  "$BAO" server -dev -dev-root-token-id="$VAULT_TOKEN" -dev-listen-address="127.0.0.1:$port" \
    -dev-no-store-token >"${TMPDIR:-/tmp}/sealvol-deploy-bao-$port.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "$VAULT_ADDR/v1/sys/health" && break
    kill -0 "$server_pid" 2>/dev/null || die "OpenBao dev server exited: $(tail -5 "${TMPDIR:-/tmp}/sealvol-deploy-bao-$port.log")"
    sleep 0.1
  done
  export VAULT_ADDR VAULT_TOKEN
fi
[[ $VAULT_ADDR == http://127.0.0.1:* || $VAULT_ADDR == https://127.0.0.1:* || $VAULT_ADDR == http://localhost:* ]] ||
  die "refusing to run against a non-local server $VAULT_ADDR"
root_token=$VAULT_TOKEN

id=dt$$x$RANDOM
transit=$id-transit kv=$id-kv auth=$id-k8s
key_a=$id-team-a key_b=$id-team-b
work=$(mktemp -d)
fails=0
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# call TOKEN METHOD PATH [JSON]: sets CODE and BODY.
call() {
  local token=$1 method=$2 path=$3 body=${4:-} out
  local args=(-sS -X "$method" -H "X-Vault-Token: $token" -w '\n%{http_code}')
  [[ -n $body ]] && args+=(-H 'Content-Type: application/json' --data "$body")
  out=$(curl "${args[@]}" "$VAULT_ADDR/v1/$path")
  CODE=${out##*$'\n'}
  BODY=${out%$'\n'*}
}
# expect CODE_PREFIX WHAT TOKEN METHOD PATH [JSON]
expect() {
  local want=$1 what=$2; shift 2
  call "$@"
  if [[ $CODE == $want ]]; then
    echo "ok   $what (HTTP $CODE)"
  else
    # Name the fields of an unexpected success, never their values (keys).
    bad "$what: want HTTP $want, got $CODE: $(jq -c '.errors // {data: (.data | keys?)}' <<<"$BODY" 2>/dev/null || echo "(unparsable body)")"
  fi
}

cleanup() {
  set +e
  for t in "${tokens[@]}"; do call "$t" POST auth/token/revoke-self; done
  for m in "$transit" "$kv"; do call "$root_token" DELETE "sys/mounts/$m"; done
  call "$root_token" DELETE "sys/auth/$auth"
  for p in controller tenant-team-a tenant-team-b; do call "$root_token" DELETE "sys/policies/acl/$id-$p"; done
  if [[ -n $server_pid ]]; then
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null
    rm -f "${TMPDIR:-/tmp}/sealvol-deploy-bao-${VAULT_ADDR##*:}.log"
  fi
  rm -rf "$work"
}
tokens=()
trap cleanup EXIT

# A CA file for the kubernetes auth config (Vault parses it as PEM).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=test-kubernetes-ca -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null

run_setup() {
  VAULT_TOKEN=$root_token "$setup" --name-prefix "$id" --transit-mount "$transit" --kv-mount "$kv" \
    --auth-mount "$auth" --key-template "$id-\${namespace}" \
    --kubernetes-host https://127.0.0.1:6443 --kubernetes-ca-file "$work/ca.crt" \
    --controller-sa sealvol:sealvol-controller \
    --tenant team-a --tenant team-b --tenant-sa team-a:dr-admin
}
t0=$SECONDS
run_setup >"$work/run1.log" 2>&1 || { cat "$work/run1.log"; die "setup.sh failed"; }
run_setup >"$work/run2.log" 2>&1 || { cat "$work/run2.log"; die "setup.sh failed on the second run (not idempotent)"; }
grep -q "kept transit at $transit/" "$work/run2.log" && grep -q "kept KEK $key_a" "$work/run2.log" ||
  bad "second run did not keep existing objects: $(cat "$work/run2.log")"
echo "ok   setup.sh ran twice in $((SECONDS - t0)) s"

# Mounts, auth method and its config.
call "$root_token" GET sys/mounts
[[ $(jq -r --arg p "$transit/" '.data[$p].type' <<<"$BODY") == transit ]] || bad "$transit/ is not a transit engine"
[[ $(jq -r --arg p "$kv/" '.data[$p].type' <<<"$BODY") == kv ]] || bad "$kv/ is not a kv engine"
[[ $(jq -r --arg p "$kv/" '.data[$p].options.version' <<<"$BODY") == 2 ]] || bad "$kv/ is not kv-v2"
call "$root_token" GET sys/auth
[[ $(jq -r --arg p "$auth/" '.data[$p].type' <<<"$BODY") == kubernetes ]] || bad "auth/$auth is not kubernetes"
call "$root_token" GET "auth/$auth/config"
[[ $(jq -r .data.kubernetes_host <<<"$BODY") == https://127.0.0.1:6443 ]] || bad "kubernetes_host not configured: $BODY"
[[ $(jq -r .data.kubernetes_ca_cert <<<"$BODY") == "$(cat "$work/ca.crt")" ]] || bad "kubernetes_ca_cert not configured"
echo "ok   engines and kubernetes auth configured"

# Roles: who may log in, with which policy.
role_is() { # ROLE NAMES NAMESPACES POLICY
  call "$root_token" GET "auth/$auth/role/$1"
  [[ $CODE == 200 ]] || { bad "role $1 missing (HTTP $CODE)"; return; }
  local got
  got=$(jq -c '[.data.bound_service_account_names, .data.bound_service_account_namespaces, .data.token_policies]' <<<"$BODY")
  [[ $got == "[[\"$2\"],[\"$3\"],[\"$4\"]]" ]] || bad "role $1 binds $got, want [$2] in [$3] with [$4]"
  echo "ok   role $1: $got"
}
role_is "$id-controller" sealvol-controller sealvol "$id-controller"
role_is "$id-tenant-team-a" sealvol-controller sealvol "$id-tenant-team-a"
role_is "$id-tenant-team-b" sealvol-controller sealvol "$id-tenant-team-b"
role_is "$id-tenant-team-a-dr" dr-admin team-a "$id-tenant-team-a"
expect 404 "no break-glass role for team-b (none requested)" "$root_token" GET "auth/$auth/role/$id-tenant-team-b-dr"

# Policy contents: A's names A's key and nothing of B, and no registry path.
call "$root_token" GET "sys/policies/acl/$id-tenant-team-a"
policy_a=$(jq -r .data.policy <<<"$BODY")
for p in "$transit/datakey/wrapped/$key_a" "$transit/decrypt/$key_a" "$transit/rewrap/$key_a" \
         "$transit/keys/$key_a/rotate"; do
  grep -q "path \"$p\"" <<<"$policy_a" || bad "tenant A policy lacks $p"
done
grep -q "team-b" <<<"$policy_a" && bad "tenant A policy mentions team-b: $policy_a"
grep -q "$kv/" <<<"$policy_a" && bad "tenant A policy grants registry access: $policy_a"
grep -q '\*' <<<"$policy_a" && bad "tenant A policy has a wildcard: $policy_a"
call "$root_token" GET "sys/policies/acl/$id-controller"
policy_ctl=$(jq -r .data.policy <<<"$BODY")
for p in "$transit/datakey/wrapped/$id-\*" "$transit/decrypt/$id-\*" "$kv/data/volumes/\*" "$kv/metadata/volumes/\*"; do
  grep -q "path \"$p\"" <<<"$policy_ctl" || bad "controller policy lacks $p"
done
grep -q '"delete"' <<<"$(grep "$transit/" <<<"$policy_ctl")" && bad "controller policy may delete transit keys"
echo "ok   policies: A names only A's key; controller covers the template's keys and the registry"

# KEK properties.
call "$root_token" GET "$transit/keys/$key_a"
[[ $(jq -c '[.data.type, .data.derived, .data.exportable, .data.deletion_allowed]' <<<"$BODY") == '["aes256-gcm96",true,false,false]' ]] ||
  bad "KEK $key_a properties: $(jq -c '.data | {type, derived, exportable, deletion_allowed}' <<<"$BODY")"
echo "ok   KEK $key_a: aes256-gcm96, derived, not exportable, deletion refused"

# Tokens carrying exactly each role's policy (what a login would issue).
mint() {
  call "$root_token" POST auth/token/create "{\"policies\":[\"$1\"],\"no_default_policy\":true,\"ttl\":\"10m\"}"
  [[ $CODE == 200 ]] || die "token create for $1: HTTP $CODE $BODY"
  jq -r .auth.client_token <<<"$BODY"
}
tok_a=$(mint "$id-tenant-team-a") tok_b=$(mint "$id-tenant-team-b") tok_ctl=$(mint "$id-controller")
tokens=("$tok_a" "$tok_b" "$tok_ctl")
ctx() { printf '%s' "$1" | base64 -w0; }

# Tenant A with its own key and registry.
expect 200 "A: datakey with A's KEK" "$tok_a" POST "$transit/datakey/wrapped/$key_a" "{\"context\":\"$(ctx sv-a1)\",\"bits\":256}"
wrapped_a=$(jq -r .data.ciphertext <<<"$BODY")
expect 200 "A: unwrap A's DEK" "$tok_a" POST "$transit/decrypt/$key_a" "{\"ciphertext\":\"$wrapped_a\",\"context\":\"$(ctx sv-a1)\"}"
[[ $(jq -r .data.plaintext <<<"$BODY" | base64 -d | wc -c) == 32 ]] || bad "A's DEK is not 32 bytes"
expect 4?? "A: A's DEK does not unwrap under another volume id (context)" "$tok_a" POST "$transit/decrypt/$key_a" "{\"ciphertext\":\"$wrapped_a\",\"context\":\"$(ctx sv-a2)\"}"
expect 200 "A: rewrap A's DEK" "$tok_a" POST "$transit/rewrap/$key_a" "{\"ciphertext\":\"$wrapped_a\",\"context\":\"$(ctx sv-a1)\"}"
expect 200 "A: rotate A's KEK" "$tok_a" POST "$transit/keys/$key_a/rotate" "{}"

# Tenant B's material, made by B.
expect 200 "B: datakey with B's KEK" "$tok_b" POST "$transit/datakey/wrapped/$key_b" "{\"context\":\"$(ctx sv-b1)\",\"bits\":256}"
wrapped_b=$(jq -r .data.ciphertext <<<"$BODY")
# The controller keeps the registry (as the provider does: KV/data/PREFIX/ID).
expect 2?? "controller: write A's registry entry" "$tok_ctl" POST "$kv/data/volumes/sv-a1" "{\"data\":{\"tenant\":\"team-a\",\"wrapped_dek\":\"$wrapped_a\"}}"
expect 2?? "controller: write B's registry entry" "$tok_ctl" POST "$kv/data/volumes/sv-b1" "{\"data\":{\"tenant\":\"team-b\",\"wrapped_dek\":\"$wrapped_b\"}}"
expect 200 "controller: list the registry" "$tok_ctl" LIST "$kv/metadata/volumes"

# Tenant A against tenant B: every path refused.
expect 403 "A cannot create a data key with B's KEK" "$tok_a" POST "$transit/datakey/wrapped/$key_b" "{\"context\":\"$(ctx sv-x)\",\"bits\":256}"
expect 403 "A cannot unwrap B's DEK" "$tok_a" POST "$transit/decrypt/$key_b" "{\"ciphertext\":\"$wrapped_b\",\"context\":\"$(ctx sv-b1)\"}"
expect 403 "A cannot rewrap B's DEK" "$tok_a" POST "$transit/rewrap/$key_b" "{\"ciphertext\":\"$wrapped_b\",\"context\":\"$(ctx sv-b1)\"}"
expect 403 "A cannot rotate B's KEK" "$tok_a" POST "$transit/keys/$key_b/rotate" "{}"
expect 403 "A cannot read B's KEK metadata" "$tok_a" GET "$transit/keys/$key_b"
expect 403 "A cannot read B's registry entry" "$tok_a" GET "$kv/data/volumes/sv-b1"
expect 403 "A cannot overwrite B's registry entry" "$tok_a" POST "$kv/data/volumes/sv-b1" '{"data":{"wrapped_dek":"x"}}'
expect 403 "A cannot list the registry" "$tok_a" LIST "$kv/metadata/volumes"
expect 403 "A cannot destroy B's registry entry" "$tok_a" DELETE "$kv/metadata/volumes/sv-b1"
expect 403 "A cannot create a KEK for another tenant" "$tok_a" POST "$transit/keys/$id-team-c" '{"type":"aes256-gcm96","derived":true}'
expect 403 "A cannot read the policies" "$tok_a" GET "sys/policies/acl/$id-tenant-team-a"
expect 403 "B cannot unwrap A's DEK" "$tok_b" POST "$transit/decrypt/$key_a" "{\"ciphertext\":\"$wrapped_a\",\"context\":\"$(ctx sv-a1)\"}"
expect 403 "B cannot read A's registry entry" "$tok_b" GET "$kv/data/volumes/sv-a1"

# The controller serves every tenant, and crypto-shreds.
expect 200 "controller: unwrap A's DEK" "$tok_ctl" POST "$transit/decrypt/$key_a" "{\"ciphertext\":\"$wrapped_a\",\"context\":\"$(ctx sv-a1)\"}"
expect 200 "controller: unwrap B's DEK" "$tok_ctl" POST "$transit/decrypt/$key_b" "{\"ciphertext\":\"$wrapped_b\",\"context\":\"$(ctx sv-b1)\"}"
expect 200 "controller: new tenant's KEK on first use" "$tok_ctl" POST "$transit/keys/$id-team-c" '{"type":"aes256-gcm96","derived":true}'
expect 2?? "controller: crypto-shred B's registry entry (all versions)" "$tok_ctl" DELETE "$kv/metadata/volumes/sv-b1"
expect 404 "B's registry entry is gone" "$tok_ctl" GET "$kv/data/volumes/sv-b1"
expect 404 "B's registry metadata is gone (no version to undelete)" "$tok_ctl" GET "$kv/metadata/volumes/sv-b1"
expect 403 "controller cannot delete a KEK" "$tok_ctl" DELETE "$transit/keys/$key_a"

((fails == 0)) || die "$fails check(s) failed"
echo "deploy vault setup: tenants isolated, controller scoped, setup idempotent"
