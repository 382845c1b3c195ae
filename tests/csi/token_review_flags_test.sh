#!/usr/bin/env bash
# `sealvol controller --token-review` outside the cluster: the API server's
# URL, CA and credential come from --token-review-url, --token-review-ca-file
# and --token-review-token-file. A local stand-in API server answers the
# TokenReviews: the broker sends them there with the given bearer token,
# grants while the API server authenticates the pod token and refuses
# (token_revoked, audited) once it does not. Unreadable CA or token files and
# a URL that is not http(s) stop the controller with an error naming the flag.
set -euo pipefail
source "$(dirname "$0")/node_test_lib.sh"

# The stand-in: POST /apis/authentication.k8s.io/v1/tokenreviews, answered
# with $work/answer (live|dead); each request's Authorization header is
# appended to $work/reviews.
cat >"$work/apiserver.py" <<'PY'
import http.server, json, os, sys
work = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(os.path.join(work, "reviews"), "a") as f:
            f.write(self.path + " " + self.headers.get("Authorization", "") + "\n")
        live = open(os.path.join(work, "answer")).read().strip() == "live"
        status = {"authenticated": live}
        if live:
            status["user"] = {"username": "system:serviceaccount:team-a:default",
                              "extra": {"authentication.kubernetes.io/pod-uid": ["u0"]}}
        out = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                          "spec": body.get("spec", {}), "status": status}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *args):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(os.path.join(work, "port.tmp"), "w").write(str(s.server_port))
os.rename(os.path.join(work, "port.tmp"), os.path.join(work, "port"))
s.serve_forever()
PY
echo live >"$work/answer"
python3 "$work/apiserver.py" "$work" &
pids+=($!)
for _ in $(seq 100); do [[ -s $work/port ]] && break; sleep 0.1; done
[[ -s $work/port ]] || fail "stand-in API server did not start"
api=http://127.0.0.1:$(cat "$work/port")
echo "reviewer-credential-$RANDOM" >"$work/review.token"

# Bad flags stop the controller at once, naming the flag.
expect_flag_error() {
  local flag=$1 rc=0
  shift
  "$sv" controller --endpoint "unix://$work/bad.sock" --kms "local:$work/kms" \
    --broker-listen "unix://$work/bad-b.sock" --jwks-file "$work/jwks.json" --issuer "$issuer" \
    --audit-log "$work/bad-audit.jsonl" --token-review "$@" >"$work/bad.log" 2>&1 || rc=$?
  ((rc != 0)) || fail "controller started with a bad $flag"
  grep -q -- "$flag" "$work/bad.log" || fail "the error does not name $flag: $(cat "$work/bad.log")"
}
expect_flag_error --token-review-url --token-review-url "ftp://$api" \
  --token-review-token-file "$work/review.token" --token-review-ca-file ""
expect_flag_error --token-review-ca-file --token-review-url "$api" \
  --token-review-token-file "$work/review.token" --token-review-ca-file "$work/no-ca.pem"
expect_flag_error --token-review-token-file --token-review-url "$api" \
  --token-review-ca-file "" --token-review-token-file "$work/no-token"

start_controller --token-review --token-review-url "$api" --token-review-ca-file "" \
  --token-review-token-file "$work/review.token"
start_node node.log
read -r vol size < <("$sv" "${c[@]}" create review --size 64Mi --tenant team-a)
stage "$vol" "$size"
publish "$vol" "$size" || fail "publish while the API server authenticates the token"
grep -qx "/apis/authentication.k8s.io/v1/tokenreviews Bearer $(cat "$work/review.token")" \
  "$work/reviews" || fail "no TokenReview with the given credential: $(cat "$work/reviews" 2>&1)"
unpublish "$vol"

echo dead >"$work/answer"
rc=0
publish "$vol" "$size" 2>"$work/err" || rc=$?
((rc != 0)) || fail "publish granted although the API server no longer authenticates the token"
grep -q "token_revoked" "$work/err" || fail "refusal is not token_revoked: $(cat "$work/err")"
grep -q '"decision":"refuse","reason":"token_revoked"' "$work/audit.jsonl" ||
  fail "refusal not audited"
unstage "$vol"
expect_counts 0 0 0 "after unstage"
echo "$name: TokenReview outside the cluster: granted while live, refused (token_revoked) after"
