#!/usr/bin/env bash
# The local dev issuer: an RS256 key pair of its own under .state/dev-issuer/, whose public key
# the locally deployed stack trusts (template parameters AuthJwks/AuthIssuer/AuthAudience), and
# tokens signed with it for local use and the tests. Never used for a stack on AWS, which trusts
# its Cognito user pool instead.
#   infra/dev-issuer.sh jwks                 print the JWKS (compact JSON), making the key if needed
#   infra/dev-issuer.sh token ROLE [NAME] [TTL_SECONDS]
#                                            print a token for NAME (default dev-ROLE) in group ROLE
#                                            (viewer, operator, admin, or none), valid TTL seconds
#                                            (default 3600)
set -euo pipefail
source "$(dirname "$0")/env.sh"

DEV_ISSUER=urn:pbs-rclone:dev-issuer
DEV_AUDIENCE=pbs-rclone-console
dir="$PBS_STATE/dev-issuer"
key="$dir/key.pem"

ensure_key() {
  if ! [ -f "$key" ]; then
    mkdir -p "$dir"
    chmod 700 "$dir"
    (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key" 2>/dev/null)
  fi
}

jwks() {
  ensure_key
  openssl rsa -in "$key" -noout -modulus 2>/dev/null | python3 -c '
import base64, hashlib, json, sys
n = bytes.fromhex(sys.stdin.read().strip().split("=", 1)[1])
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
kid = hashlib.sha256(n).hexdigest()[:16]
print(json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
                            "n": b64(n), "e": "AQAB"}]}, separators=(",", ":")))'
}

token() {
  local role=${1:?usage: dev-issuer.sh token ROLE [NAME] [TTL_SECONDS]} name=${2:-} ttl=${3:-3600}
  ensure_key
  local kid
  kid=$(jwks | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"][0]["kid"])')
  local unsigned
  unsigned=$(python3 - "$kid" "$role" "${name:-dev-$role}" "$ttl" "$DEV_ISSUER" "$DEV_AUDIENCE" <<'PY'
import base64, json, sys, time
kid, role, name, ttl, iss, aud = sys.argv[1:7]
b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=").decode()
now = int(time.time())
claims = {"iss": iss, "aud": aud, "sub": f"dev|{name}", "username": name,
          "iat": now, "exp": now + int(ttl)}
if role != "none":
    claims["cognito:groups"] = [role]
print(b64({"alg": "RS256", "typ": "JWT", "kid": kid}) + "." + b64(claims))
PY
)
  local sig
  sig=$(printf '%s' "$unsigned" | openssl dgst -sha256 -sign "$key" -binary | python3 -c '
import base64, sys; print(base64.urlsafe_b64encode(sys.stdin.buffer.read()).rstrip(b"=").decode())')
  printf '%s.%s\n' "$unsigned" "$sig"
}

case "${1:-}" in
  jwks) jwks ;;
  token) shift; token "$@" ;;
  issuer) echo "$DEV_ISSUER" ;;
  audience) echo "$DEV_AUDIENCE" ;;
  *) echo "usage: dev-issuer.sh jwks | token ROLE [NAME] [TTL_SECONDS] | issuer | audience" >&2; exit 2 ;;
esac
