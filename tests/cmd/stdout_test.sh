#!/usr/bin/env bash
# Every command that prints data or JSON keeps stdout for that data: log lines
# go to stderr. `read` with a Vault key provider (which logs as it logs in)
# returns exactly the bytes written; the JSON commands' stdout parses as JSON
# with both key providers. Needs OpenBao (VAULT_ADDR, VAULT_TOKEN, as
# scripts/test exports) for the Vault half; without it that half is skipped,
# unless SEALVOL_REQUIRE_VAULT=1.
set -euo pipefail
bin=${SEALVOL_BIN:?SEALVOL_BIN is not set}
work=$(mktemp -d /tmp/sealvol-stdout-XXXXXX)
trap 'rm -rf "$work"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# json WHAT CMD...: runs CMD; its stdout must be one JSON document.
json() {
  local what=$1
  shift
  if ! "$@" >"$work/out" 2>"$work/err"; then
    fail "$what: exit status $?: $(cat "$work/err")"
    return
  fi
  if python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$work/out" 2>/dev/null; then
    echo "ok: $what: stdout is JSON"
  else
    fail "$what: stdout is not JSON: $(head -c 300 "$work/out")"
  fi
}

# exercise NAME KMS-FLAGS...: format, write, read back exactly, and the JSON
# commands, with one key provider.
exercise() {
  local name=$1
  shift
  local img=$work/$name.img state=$work/$name-state tenant=team-$name
  json "$name: format" "$bin" format "$img" --size 16M --tenant "$tenant" \
    --state-dir "$state" "$@"
  local id
  # Found even when the JSON check failed, so the rest still runs.
  id=$(grep -o '"volume_id": *"sv-[0-9a-f]*"' "$work/out" | grep -o 'sv-[0-9a-f]*' || true)
  [[ $id == sv-* ]] || { fail "$name: format printed no volume id"; return; }

  head -c 10000 /dev/urandom >"$work/data"
  "$bin" write "$img" --offset 5000 --state-dir "$state" "$@" <"$work/data" ||
    fail "$name: write"
  "$bin" read "$img" --offset 5000 --length 10000 --state-dir "$state" "$@" \
    >"$work/back" 2>"$work/err" || fail "$name: read: $(cat "$work/err")"
  if cmp -s "$work/data" "$work/back"; then
    echo "ok: $name: read returns exactly the bytes written"
  else
    fail "$name: read returned $(stat -c %s "$work/back") bytes that differ" \
         "from the 10000 written; first line: $(head -n1 "$work/back" | head -c 120 | tr -c '[:print:]' '.')"
  fi

  json "$name: dump" "$bin" dump "$img"
  json "$name: check" "$bin" check "$img" --state-dir "$state" "$@"
  json "$name: keys list" "$bin" keys list --tenant "$tenant" --state-dir "$state" "$@"
  json "$name: keys show" "$bin" keys show "$id" --state-dir "$state" "$@"
  json "$name: rotate" "$bin" rotate --tenant "$tenant" --state-dir "$state" "$@"
  json "$name: status --json" "$bin" status --json --state-dir "$state"
  json "$name: keys destroy" "$bin" keys destroy "$id" --yes --state-dir "$state" "$@"
}

exercise local

# The test issuer: keygen prints the PEM, jwks and verify print JSON.
"$bin" token keygen --out "$work/issuer.pem" 2>/dev/null || fail "token keygen"
"$bin" token keygen >"$work/stdout.pem" 2>/dev/null || fail "token keygen to stdout"
if [[ $(head -n1 "$work/stdout.pem") != "-----BEGIN "* ]] ||
   grep -q -v -e '^-----' -e '^[A-Za-z0-9+/=]*$' "$work/stdout.pem"; then
  fail "token keygen: stdout holds more than the PEM key"
fi
json "token jwks" "$bin" token jwks --issuer-key "$work/issuer.pem"
cp "$work/out" "$work/jwks.json"
"$bin" token mint --issuer-key "$work/issuer.pem" --issuer https://issuer.test \
  --namespace team-a --service-account default --pod web-0 >"$work/token" \
  2>"$work/err" || fail "token mint: $(cat "$work/err")"
[[ $(wc -l <"$work/token") == 1 ]] || fail "token mint printed more than the token"
json "token verify" "$bin" token verify --jwks-file "$work/jwks.json" \
  --issuer https://issuer.test --token-file "$work/token"

if [[ -n ${VAULT_ADDR:-} && -n ${VAULT_TOKEN:-} ]]; then
  [[ $VAULT_ADDR == http://127.0.0.1:* ]] || { echo "FAIL: not a local server: $VAULT_ADDR"; exit 1; }
  printf '%s' "$VAULT_TOKEN" >"$work/vault-token"
  chmod 600 "$work/vault-token"
  prefix=sealvol-stdout-test/$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
  exercise vault --kms "vault+$VAULT_ADDR?kv_prefix=$prefix&token_file=$work/vault-token&timeout_ms=5000"
elif [[ ${SEALVOL_REQUIRE_VAULT:-} == 1 ]]; then
  fail "SEALVOL_REQUIRE_VAULT=1 but VAULT_ADDR/VAULT_TOKEN are unset"
else
  echo "skip: the Vault half (no VAULT_ADDR; run: eval \"\$(scripts/openbao-dev start)\")"
fi

if ((fails)); then echo "stdout test: $fails failed"; exit 1; fi
echo "stdout test: OK"
