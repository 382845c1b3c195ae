#!/usr/bin/env bash
# Configures Vault or OpenBao for sealvol. Idempotent: run it again after
# adding a tenant. Speaks the HTTP API with curl and jq (no vault/bao CLI).
#
#   VAULT_ADDR=https://vault:8200 VAULT_TOKEN=... deploy/vault/setup.sh \
#     --tenant team-a --tenant team-b [options]
#
# What it sets up:
#   * a transit engine (the tenants' KEKs; they never leave Vault) and a
#     kv-v2 engine (the registry of wrapped DEKs);
#   * the kubernetes auth method, configured to verify service-account
#     tokens with the cluster's TokenReview API;
#   * role + policy "sealvol-controller" for the controller's service account:
#     the only principal that can create, unwrap, rewrap and destroy keys;
#   * per tenant T: KEK "sealvol-T" (aes256-gcm96, derived so the volume id is
#     the key-derivation context, not exportable, deletion refused), and role
#     + policy "sealvol-tenant-T" that can use only T's KEK (datakey, decrypt,
#     rewrap, rotate), bound to the controller; with --tenant-sa, also a role
#     "sealvol-tenant-T-dr" with the same policy for a tenant's own
#     break-glass service account (disaster recovery).
#     Tenant A's role has no path to tenant B's key. The registry is keyed by
#     volume id only (KV/data/PREFIX/VOLUME_ID, see docs/kms.md), so it cannot
#     be split by tenant: tenant roles get no registry access at all; a
#     wrapped DEK is useless without its tenant's KEK.
#
# Options (defaults in brackets):
#   --transit-mount PATH      [transit]
#   --kv-mount PATH           [sealvol]
#   --kv-prefix PREFIX        registry entries live at KV/data/PREFIX/VOLUME_ID [volumes]
#   --key-template TMPL       KEK name; must contain ${namespace} [sealvol-${namespace}]
#   --auth-mount PATH         kubernetes auth mount [kubernetes]
#   --kubernetes-host URL     API server as Vault reaches it [https://kubernetes.default.svc]
#   --kubernetes-ca-file F    the API server's CA (PEM); omit when Vault runs in-cluster
#   --token-reviewer-jwt-file F  a token allowed to call TokenReview; omit when
#                             Vault runs in-cluster (it uses its own)
#   --controller-sa NS:SA     the controller's service account [sealvol:sealvol-controller]
#   --audience AUD            audience Vault requires in login tokens [vault]
#   --tenant NS               a tenant namespace (repeatable)
#   --tenant-sa NS:SA         also allow this service account to log in with
#                             its namespace's tenant role (repeatable)
#   --token-ttl DUR           TTL of tokens the roles issue [15m]
#   --no-derived              create non-derived KEKs
#   --name-prefix P           prefix of policy and role names [sealvol]
# Environment: VAULT_ADDR, VAULT_TOKEN (a token allowed to mount engines and
# write policies), optional VAULT_NAMESPACE and VAULT_CACERT.
set -euo pipefail

transit=transit kv=sealvol kv_prefix=volumes key_template='sealvol-${namespace}'
auth=kubernetes k8s_host=https://kubernetes.default.svc k8s_ca_file="" reviewer_jwt_file=""
controller_sa=sealvol:sealvol-controller audience=vault token_ttl=15m derived=true
prefix=sealvol
tenants=() tenant_sas=()
while (($#)); do
  case "$1" in
    --transit-mount) transit=$2; shift ;;
    --kv-mount) kv=$2; shift ;;
    --kv-prefix) kv_prefix=$2; shift ;;
    --key-template) key_template=$2; shift ;;
    --auth-mount) auth=$2; shift ;;
    --kubernetes-host) k8s_host=$2; shift ;;
    --kubernetes-ca-file) k8s_ca_file=$2; shift ;;
    --token-reviewer-jwt-file) reviewer_jwt_file=$2; shift ;;
    --controller-sa) controller_sa=$2; shift ;;
    --audience) audience=$2; shift ;;
    --tenant) tenants+=("$2"); shift ;;
    --tenant-sa) tenant_sas+=("$2"); shift ;;
    --token-ttl) token_ttl=$2; shift ;;
    --no-derived) derived=false ;;
    --name-prefix) prefix=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "setup.sh: $*" >&2; exit 1; }
: "${VAULT_ADDR:?set VAULT_ADDR}" "${VAULT_TOKEN:?set VAULT_TOKEN}"
command -v jq >/dev/null || die "jq is required"
[[ $key_template == *'${namespace}'* ]] || die "--key-template must contain \${namespace}: every tenant needs its own KEK"
[[ $controller_sa == *:* ]] || die "--controller-sa must be NAMESPACE:SERVICEACCOUNT"
dns_label='^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'
for t in "${tenants[@]}"; do [[ $t =~ $dns_label ]] || die "tenant '$t' is not a namespace name"; done
for sa in "${tenant_sas[@]}"; do
  printf '%s\n' "${tenants[@]}" | grep -qx "${sa%%:*}" || die "--tenant-sa $sa: ${sa%%:*} is not a --tenant"
done

# api METHOD PATH [JSON]: prints the response body; fails on HTTP >= 400
# with Vault's error text (never the token).
api() {
  local method=$1 path=$2 body=${3:-} out code
  local args=(-sS -X "$method" -H "X-Vault-Token: $VAULT_TOKEN" -w '\n%{http_code}')
  [[ -n ${VAULT_NAMESPACE:-} ]] && args+=(-H "X-Vault-Namespace: $VAULT_NAMESPACE")
  [[ -n ${VAULT_CACERT:-} ]] && args+=(--cacert "$VAULT_CACERT")
  [[ -n $body ]] && args+=(-H 'Content-Type: application/json' --data "$body")
  out=$(curl "${args[@]}" "$VAULT_ADDR/v1/$path") || die "$method $path: cannot reach $VAULT_ADDR"
  code=${out##*$'\n'}
  out=${out%$'\n'*}
  if ((code >= 400)); then
    die "$method $path: HTTP $code: $(jq -r '.errors // [] | join("; ")' <<<"$out" 2>/dev/null || echo "$out")"
  fi
  printf '%s' "$out"
}

# exists PATH: 0 if GET PATH answers 200, 1 on 404; other answers are fatal.
exists() {
  local args=(-sS -o /dev/null -w '%{http_code}' -H "X-Vault-Token: $VAULT_TOKEN") code
  [[ -n ${VAULT_NAMESPACE:-} ]] && args+=(-H "X-Vault-Namespace: $VAULT_NAMESPACE")
  [[ -n ${VAULT_CACERT:-} ]] && args+=(--cacert "$VAULT_CACERT")
  code=$(curl "${args[@]}" "$VAULT_ADDR/v1/$1") || die "GET $1: cannot reach $VAULT_ADDR"
  case $code in
    200) return 0 ;;
    404) return 1 ;;
    *) die "GET $1: HTTP $code" ;;
  esac
}

key_name() { printf '%s' "${key_template//'${namespace}'/$1}"; }

# mount_engine PATH TYPE OPTIONS_JSON: enable unless present with that type.
mount_engine() {
  local path=$1 type=$2 options=$3 existing
  existing=$(api GET sys/mounts | jq -r --arg p "$path/" '.data[$p].type // .[$p].type // empty')
  if [[ -z $existing ]]; then
    api POST "sys/mounts/$path" "$(jq -nc --arg t "$type" --argjson o "$options" \
      '{type: $t, options: $o, description: "sealvol"}')" >/dev/null
    echo "enabled $type at $path/"
  elif [[ $existing != "$type" ]]; then
    die "$path/ is already a $existing engine, not $type"
  else
    echo "kept $type at $path/"
  fi
  if [[ $type == kv ]]; then
    local version
    version=$(api GET "sys/mounts/$path/tune" | jq -r '.data.options.version // .options.version // "1"')
    [[ $version == 2 ]] || die "$path/ is kv version $version; sealvol needs kv-v2"
  fi
}

mount_engine "$transit" transit '{}'
mount_engine "$kv" kv '{"version":"2"}'

# Kubernetes auth.
if ! api GET sys/auth | jq -e --arg p "$auth/" '(.data[$p] // .[$p]) != null' >/dev/null; then
  api POST "sys/auth/$auth" '{"type":"kubernetes","description":"sealvol"}' >/dev/null
  echo "enabled kubernetes auth at auth/$auth/"
else
  echo "kept auth/$auth/"
fi
config=$(jq -nc --arg h "$k8s_host" '{kubernetes_host: $h}')
if [[ -n $k8s_ca_file ]]; then
  config=$(jq -c --rawfile ca "$k8s_ca_file" '. + {kubernetes_ca_cert: $ca}' <<<"$config")
fi
if [[ -n $reviewer_jwt_file ]]; then
  config=$(jq -c --rawfile j "$reviewer_jwt_file" '. + {token_reviewer_jwt: ($j | rtrimstr("\n")), disable_local_ca_jwt: true}' <<<"$config")
fi
api POST "auth/$auth/config" "$config" >/dev/null
echo "configured auth/$auth/ for $k8s_host"

# Policy text for one tenant's KEK.
tenant_rules() {
  local key
  key=$(key_name "$1")
  cat <<POLICY
# sealvol tenant $1: only this tenant's KEK.
path "$transit/keys/$key" { capabilities = ["create", "read", "update"] }
path "$transit/keys/$key/rotate" { capabilities = ["update"] }
path "$transit/datakey/wrapped/$key" { capabilities = ["update"] }
path "$transit/decrypt/$key" { capabilities = ["update"] }
path "$transit/rewrap/$key" { capabilities = ["update"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
POLICY
}

put_policy() {
  api PUT "sys/policies/acl/$1" "$(jq -nc --arg p "$2" '{policy: $p}')" >/dev/null
  echo "wrote policy $1"
}

# role NAME POLICY SA_NAMES SA_NAMESPACES
put_role() {
  api POST "auth/$auth/role/$1" "$(jq -nc --arg p "$2" --arg n "$3" --arg ns "$4" \
    --arg aud "$audience" --arg ttl "$token_ttl" \
    '{bound_service_account_names: ($n | split(",")),
      bound_service_account_namespaces: ($ns | split(",")),
      audience: $aud, token_policies: [$p], token_ttl: $ttl, token_max_ttl: $ttl,
      token_no_default_policy: true, token_type: "service"}')" >/dev/null
  echo "wrote role $1 ($3 in $4)"
}

# The controller: every tenant's key (KEK names from the template, so a new
# tenant's KEK can be created on first use; the glob also covers
# keys/NAME/rotate and keys/NAME/config, used by rotation) and the whole
# registry. No delete on keys: a KEK deletion shreds a whole tenant and is
# left to an operator.
key_glob=$(key_name '*')
put_policy "$prefix-controller" "$(cat <<POLICY
# sealvol controller: creates, unwraps, rewraps and destroys volume keys.
path "$transit/keys/$key_glob" { capabilities = ["create", "read", "update"] }
path "$transit/datakey/wrapped/$key_glob" { capabilities = ["update"] }
path "$transit/decrypt/$key_glob" { capabilities = ["update"] }
path "$transit/rewrap/$key_glob" { capabilities = ["update"] }
path "$kv/data/$kv_prefix/*" { capabilities = ["create", "read", "update", "delete"] }
path "$kv/metadata/$kv_prefix/*" { capabilities = ["read", "list", "delete"] }
path "$kv/metadata/$kv_prefix" { capabilities = ["list"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
POLICY
)"
put_role "$prefix-controller" "$prefix-controller" "${controller_sa#*:}" "${controller_sa%%:*}"

for t in "${tenants[@]}"; do
  key=$(key_name "$t")
  if exists "$transit/keys/$key"; then
    echo "kept KEK $key"
  else
    api POST "$transit/keys/$key" "$(jq -nc --argjson d "$derived" \
      '{type: "aes256-gcm96", derived: $d, exportable: false, allow_plaintext_backup: false}')" >/dev/null
    echo "created KEK $key"
  fi
  # Deleting a KEK shreds every volume of the tenant at once: refuse it
  # unless an operator turns this off on purpose.
  api POST "$transit/keys/$key/config" '{"deletion_allowed": false}' >/dev/null
  put_policy "$prefix-tenant-$t" "$(tenant_rules "$t")"
  put_role "$prefix-tenant-$t" "$prefix-tenant-$t" "${controller_sa#*:}" "${controller_sa%%:*}"
  # A tenant's own break-glass accounts get a separate role bound to the
  # tenant namespace only (Vault binds names x namespaces, so mixing them
  # with the controller's in one role would widen both).
  dr_names=""
  for sa in "${tenant_sas[@]}"; do
    [[ ${sa%%:*} == "$t" ]] && dr_names+="${dr_names:+,}${sa#*:}"
  done
  if [[ -n $dr_names ]]; then
    put_role "$prefix-tenant-$t-dr" "$prefix-tenant-$t" "$dr_names" "$t"
  fi
done
echo "setup.sh: done (${#tenants[@]} tenant(s))"
