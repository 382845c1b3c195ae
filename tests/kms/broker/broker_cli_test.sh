#!/usr/bin/env bash
# CLI test of `sealvol token` (test issuer) and `sealvol audit verify`. The
# audit chain here is built by the shell with sha256sum, an implementation
# independent of the C++ one, so the format in docs/audit.md is pinned.
set -euo pipefail
bin=${SEALVOL_BIN:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# --- token issuer ---------------------------------------------------------
"$bin" token --help | grep -q "FOR TESTS ONLY" || fail "help must say FOR TESTS ONLY"
"$bin" token mint --help | grep -q "FOR TESTS ONLY" || fail "mint help"
for alg in RS256 ES256; do
  "$bin" token keygen --alg $alg --out "$work/key.pem" 2>/dev/null
  [[ $(stat -c %a "$work/key.pem") == 600 ]] || fail "key file mode"
  "$bin" token jwks --issuer-key "$work/key.pem" >"$work/jwks.json"
  grep -q "\"alg\":\"$alg\"" "$work/jwks.json" || fail "jwks alg $alg"
  grep -q PRIVATE "$work/jwks.json" && fail "jwks leaks the private key"
  mint() {
    "$bin" token mint --issuer-key "$work/key.pem" --issuer https://iss.test \
      --namespace team-a --service-account trainer --pod web-0 --pod-uid u-1 \
      --node node-1 "$@"
  }
  verify() {
    "$bin" token verify --jwks-file "$work/jwks.json" --issuer https://iss.test \
      --token-file - 2>&1
  }
  out=$(mint --ttl 10m | verify) || fail "$alg: fresh token refused: $out"
  grep -q '"pod_uid": "u-1"' <<<"$out" || fail "$alg: claims not printed"
  set +e
  out=$(mint --ttl 10m --not-before -1h | verify); rc=$?
  set -e
  [[ $rc == 11 && $out == *token_expired* ]] || fail "$alg: expired: rc=$rc $out"
  set +e
  out=$(mint --ttl 10m --not-before +10m | verify); rc=$?
  set -e
  [[ $rc == 11 && $out == *token_not_yet_valid* ]] || fail "$alg: nbf: $out"
  set +e
  out=$(mint --ttl 10m --audience vault | verify); rc=$?
  set -e
  [[ $rc == 11 && $out == *wrong_audience* ]] || fail "$alg: aud: $out"
done
# A node plugin's token.
"$bin" token mint --issuer-key "$work/key.pem" --issuer https://iss.test \
  --namespace sealvol-system --service-account sealvol-node --node node-1 \
  --ttl 1h | "$bin" token verify --jwks-file "$work/jwks.json" \
  --issuer https://iss.test --token-file - | grep -q '"node": "node-1"' \
  || fail "node token"

# --- audit verify ---------------------------------------------------------
# Writes N chained records to $1, continuing from prev=$2 seq=$3.
chain() {
  local file=$1 prev=$2 seq=$3 n=$4 line
  : >"$file"
  for ((i = 0; i < n; i++)); do
    seq=$((seq + 1))
    line="{\"time\":\"2026-11-28T00:00:0${i}.000Z\",\"seq\":$seq,\"decision\":\"grant\",\"reason\":\"granted\",\"volume\":\"sv-1\",\"tenant\":\"team-a\",\"namespace\":\"team-a\",\"pod\":\"p$seq\",\"pod_uid\":\"u$seq\",\"service_account\":\"trainer\",\"node\":\"node-1\",\"token_id\":\"j$seq\",\"key_version\":1,\"message\":\"key released\",\"prev\":\"$prev\"}"
    printf '%s\n' "$line" >>"$file"
    prev=$(printf '%s' "$line" | sha256sum | cut -d' ' -f1)
  done
  echo "$prev $seq"
}
expect_bad() {  # expect_bad WHERE FILE...
  local where=$1; shift
  set +e
  out=$("$bin" audit verify "$@" 2>&1); rc=$?
  set -e
  [[ $rc == 9 ]] || fail "audit verify exit $rc for $where: $out"
  [[ $out == *"$where"* ]] || fail "expected $where in: $out"
}
zero=$(printf '0%.0s' {1..64})
chain "$work/a.log" "$zero" 0 6 >/dev/null
"$bin" audit verify "$work/a.log" | grep -q "OK: 6 records" || fail "intact chain"

sed '3s/"granted"/"GRANTED"/' "$work/a.log" >"$work/edit.log"
expect_bad "edit.log:4:" "$work/edit.log"
sed '2d' "$work/a.log" >"$work/del.log"
expect_bad "del.log:2:" "$work/del.log"
sed '4{h;d};5G' "$work/a.log" >"$work/swap.log"   # swap lines 4 and 5
expect_bad "swap.log:4:" "$work/swap.log"
{ head -3 "$work/a.log"; sed -n 1p "$work/a.log"; tail -n +4 "$work/a.log"; } >"$work/ins.log"
expect_bad "ins.log:4:" "$work/ins.log"

# Rotation: the second file continues the first one's chain.
read -r head seq < <(chain "$work/r1.log" "$zero" 0 3)
chain "$work/r2.log" "$head" "$seq" 3 >/dev/null
"$bin" audit verify "$work/r1.log" "$work/r2.log" | grep -q "OK: 6 records" \
  || fail "rotated chain"
expect_bad "r2.log:1:" "$work/r2.log" "$work/r1.log"
expect_bad "r1.log:1:" --partial "$work/r2.log" "$work/r1.log"
expect_bad "r2.log:1:" "$work/r2.log"
"$bin" audit verify --partial "$work/r2.log" | grep -q "OK: 3 records" \
  || fail "--partial"
echo "broker CLI: OK"
