#!/usr/bin/env bash
# make demo: a local control plane (source-built kube-apiserver + etcd), the CRDs, the
# manager, and a SigningKey with a short rotation interval, watched live as its keys move
# Next -> Active -> Retired -> removed and the published JWKS follows. Then the sidecar, in
# standalone mode, guards an app: tokens signed with the Secret's active key pass, tampered
# and expired ones get 401, and a token signed before a rotation still passes after it.
#
#   DEMO_SECONDS=60 hack/demo.sh     (how long to watch the keys; default 45)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
assets=$(hack/kube-binaries.sh)
export KUBEBUILDER_ASSETS=$assets
kubectl="$assets/kubectl"
work="$root/bin/demo"
mkdir -p "$work"
rm -f "$work/kubeconfig"
export KUBECONFIG="$work/kubeconfig"
. hack/lib.sh

say "Starting a local control plane (kube-apiserver $(basename "$assets" | cut -d- -f1) and etcd, built from source)"
go build -o "$work/localcluster" ./hack/localcluster
"$work/localcluster" --write-kubeconfig "$KUBECONFIG" > "$work/localcluster.log" 2>&1 &
track $!
for _ in $(seq 120); do [ -s "$KUBECONFIG" ] && break; sleep 0.5; done
[ -s "$KUBECONFIG" ] || { cat "$work/localcluster.log"; echo "control plane did not start"; exit 1; }
"$kubectl" get crd -o custom-columns=INSTALLED_CRD:.metadata.name

say "Starting the manager (logs in bin/demo/manager.log)"
disc=$(port)
bin/manager --webhook-port=0 --metrics-bind-address="127.0.0.1:$(port)" --health-probe-bind-address="127.0.0.1:$(port)" \
  --discovery-bind-address="127.0.0.1:$disc" > "$work/manager.log" 2>&1 &
track $!

say "Applying a SigningKey: ES256, active 20s, published 6s ahead, retired keys kept 40s"
cat <<YAML | tee "$work/signingkey.yaml"
apiVersion: tokenkeeper.dev/v1alpha1
kind: SigningKey
metadata:
  name: demo
  namespace: default
spec:
  algorithm: ES256
  issuer: http://127.0.0.1:$disc/default/demo
  rotation:
    interval: 20s
    publishAhead: 6s
    retainFor: 40s
YAML
"$kubectl" apply -f "$work/signingkey.yaml"

say "Watching the keys (Ready, Active Key and Next Rotation are printer columns of kubectl get sk)"
short() { cut -c1-10; }
last=""
end=$(( $(date +%s) + ${DEMO_SECONDS:-45} ))
start=$(date +%s)
while [ "$(date +%s)" -lt "$end" ]; do
  states=$("$kubectl" get sk demo -o jsonpath='{range .status.keys[*]}{.kid}={.state} {end}' 2>/dev/null || true)
  jwks=$("$kubectl" get cm demo-jwks -o jsonpath='{.data.jwks\.json}' 2>/dev/null | python3 -c 'import json,sys
try: print(" ".join(k["kid"][:8] for k in json.load(sys.stdin)["keys"]))
except Exception: print("-")' || true)
  line="keys: $(for kv in $states; do printf '%s:%s ' "${kv%%=*}" "${kv#*=}" | sed -E 's/^(.{8})[^:]*/\1/'; done)| JWKS: [$jwks]"
  if [ "$line" != "$last" ]; then
    printf '+%3ss  %s\n' "$(( $(date +%s) - start ))" "$line"
    last=$line
  fi
  sleep 0.5
done

say "kubectl get signingkeys"
"$kubectl" get sk -o wide
say "Events"
"$kubectl" get events --field-selector involvedObject.name=demo --sort-by=.metadata.creationTimestamp \
  -o custom-columns=REASON:.reason,MESSAGE:.message 2>/dev/null | tail -12 || true
say "The Secret's stable entries (what an issuer mounts); private keys stay in the Secret"
"$kubectl" get secret demo-signing-keys -o jsonpath='{.data}' | python3 -c 'import json,sys; print("\n".join(sorted(json.load(sys.stdin))))'
say "The issuer's discovery document, served by the manager"
curl -s "http://127.0.0.1:$disc/default/demo/.well-known/openid-configuration"; echo

say "The sidecar, standalone: an app on 127.0.0.1 behind it, the policy and JWKS from files"
go build -o "$work/" ./test/e2e/tokencheck
issuer="http://127.0.0.1:$disc/default/demo"
cat > "$work/policy.yaml" <<YAML
apiVersion: tokenkeeper.dev/v1alpha1
kind: TokenPolicy
metadata: {name: demo}
spec:
  issuer: $issuer
  audiences: [demo]
  trustedKeys: [{signingKeyRef: {name: demo}}]
  rules: [{pathPrefix: /healthz, anonymous: true}]
  forwardClaims: [{claim: sub, header: X-User}]
YAML
cat "$work/policy.yaml"
mkdir -p "$work/keys"
sync_files() { # what a mounted ConfigMap and Secret would give: the JWKS and the active key
  "$kubectl" get cm demo-jwks -o jsonpath='{.data.jwks\.json}' > "$work/jwks.json.tmp" && mv "$work/jwks.json.tmp" "$work/jwks.json"
  # Written aside and renamed, as the kubelet swaps a mounted volume: a reader never sees half a file.
  "$kubectl" get secret demo-signing-keys -o jsonpath='{.data.active\.jwk}' | base64 -d > "$work/keys/active.jwk.tmp" && mv "$work/keys/active.jwk.tmp" "$work/keys/active.jwk"
}
sync_files
( while sleep 1; do sync_files 2>/dev/null; done ) &
track $!
app=$(port); proxy=$(port); admin=$(port)
"$work/tokencheck" echo --listen "127.0.0.1:$app" > "$work/app.log" 2>&1 &
track $!
bin/sidecar --listen "127.0.0.1:$proxy" --admin-listen "127.0.0.1:$admin" --upstream "http://127.0.0.1:$app" \
  --policy-file "$work/policy.yaml" --jwks-file "$work/jwks.json" > "$work/sidecar.log" 2>&1 &
track $!
wait_http "http://127.0.0.1:$admin/readyz" "the sidecar"
mint() { "$work/tokencheck" mint --key-dir "$work/keys" --issuer "$issuer" --audience demo "$@"; }
try() { # label, expected status, then curl arguments
  local label=$1 want=$2; shift 2
  EXPECT_BODY="$work/body" expect "$label" "$want" "$@" "http://127.0.0.1:$proxy/api"
}
token=$(mint)
kid=$(cat "$work/keys/active.jwk" | python3 -c 'import json,sys; print(json.load(sys.stdin)["kid"])')
try "a token signed with the active key" 200 -H "Authorization: Bearer $token" -H "X-User: mallory"
saw=$(python3 -c 'import json,sys; h=json.load(open(sys.argv[1]))["headers"]; print("X-User=%s Authorization=%s" % (",".join(h.get("X-User", [])), h.get("Authorization")))' "$work/body")
printf '  %-50s    %s\n' "(the app saw X-User, never the token)" "$saw"
[ "$saw" = "X-User=alice Authorization=None" ] || die "the app saw $saw, not the verified X-User alone"
tampered=$(python3 -c 'import sys; t=sys.argv[1].split("."); p=t[1]; t[1]=p[:-2]+("A" if p[-2]!="A" else "B")+p[-1]; print(".".join(t))' "$token")
try "the same token, payload tampered" 401 -H "Authorization: Bearer $tampered"
expired=$(mint --expired)
try "an expired token" 401 -H "Authorization: Bearer $expired"
try "no token at all" 401
say "Waiting for the next rotation: the token signed by ${kid:0:8} must still pass after it"
for _ in $(seq 60); do
  now=$("$kubectl" get sk demo -o jsonpath='{.status.activeKID}')
  [ "$now" != "$kid" ] && break
  sleep 1
done
[ "$now" != "$kid" ] || die "no rotation within 60s"
sleep 2
echo "  active key now ${now:0:8}; ${kid:0:8} is retired but stays published for retainFor"
try "the token signed before the rotation" 200 -H "Authorization: Bearer $token"
fresh=$(mint)
try "a token signed with the new key" 200 -H "Authorization: Bearer $fresh"
say "Sidecar metrics: rejections by reason"
metrics=$(curl -s "http://127.0.0.1:$admin/metrics")
grep -E '^tokenkeeper_sidecar_(rejections_total|requests_total)' <<<"$metrics" | grep -v ' 0$' || true
# Each 401 above was refused for the reason it announced.
for reason in bad_signature expired missing_token; do
  grep -qE "^tokenkeeper_sidecar_rejections_total\{reason=\"$reason\"\} 1\$" <<<"$metrics" || die "the sidecar did not count exactly one $reason rejection"
done
say "Done. The control plane, manager and sidecar stop now."
