#!/usr/bin/env bash
# make demo: a local control plane (source-built kube-apiserver + etcd), the CRDs, the
# manager, and a SigningKey with a short rotation interval, watched live as its keys move
# Next -> Active -> Retired -> removed and the published JWKS follows. Then a TokenPolicy and
# the sidecar, started from a copy of the policy's bundle and subscribed to the manager's
# snapshot server: tokens signed with the Secret's active key pass, tampered and expired ones
# get 401, a token signed before a rotation still passes after it, and a revoked jti is
# refused within a second of the RevocationList write, measured (the bundle copy never
# changes: every key and revocation after the start arrives through the push).
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
disc=$(port); dist=$(port)
"$kubectl" create namespace tokenkeeper-system >/dev/null
# --namespace: where its certificate Secret lives (the snapshot server's TLS, from its own CA).
bin/manager --webhook-port=0 --metrics-bind-address="127.0.0.1:$(port)" --health-probe-bind-address="127.0.0.1:$(port)" \
  --discovery-bind-address="127.0.0.1:$disc" --namespace=tokenkeeper-system \
  --distribution-bind-address="127.0.0.1:$dist" --distribution-cert-hosts=127.0.0.1 > "$work/manager.log" 2>&1 &
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

say "A TokenPolicy; the sidecar starts from a copy of its bundle and subscribes to the manager"
go build -o "$work/" ./test/e2e/tokencheck
issuer="http://127.0.0.1:$disc/default/demo"
cat <<YAML | tee "$work/policy.yaml"
apiVersion: tokenkeeper.dev/v1alpha1
kind: TokenPolicy
metadata: {name: demo, namespace: default}
spec:
  issuer: $issuer
  audiences: [demo]
  trustedKeys: [{signingKeyRef: {name: demo}}]
  rules: [{pathPrefix: /healthz, anonymous: true}]
  forwardClaims: [{claim: sub, header: X-User}]
---
apiVersion: tokenkeeper.dev/v1alpha1
kind: RevocationList
metadata: {name: incidents, namespace: default}
spec: {}
YAML
"$kubectl" apply -f "$work/policy.yaml" >/dev/null
"$kubectl" wait tp/demo --for=condition=Ready --timeout=60s >/dev/null
for _ in $(seq 100); do
  "$kubectl" get cm demo-bundle -o jsonpath='{.data.distribution-ca\.crt}' 2>/dev/null | grep -q CERTIFICATE && break
  sleep 0.2
done
# What a ConfigMap volume would hold at the pod's start; never refreshed here.
rm -rf "$work/bundle"; mkdir -p "$work/bundle"
for f in policy.yaml jwks.json revocations.yaml distribution-ca.crt; do
  "$kubectl" get cm demo-bundle -o go-template="{{index .data \"$f\"}}" > "$work/bundle/$f"
done
grep -q CERTIFICATE "$work/bundle/distribution-ca.crt" || die "the bundle carries no distribution CA"
echo "  bundle copied: $(cd "$work/bundle" && ls | tr '\n' ' ')"
# The projected service-account token the webhook would mount: the manager checks it with a TokenReview.
"$kubectl" create serviceaccount demo-app >/dev/null
"$kubectl" create token demo-app --audience tokenkeeper.dev/distribution --duration 1h > "$work/distribution-token"
mkdir -p "$work/keys"
sync_key() { # what a mounted Secret would give an issuer: the active key
  # Written aside and renamed, as the kubelet swaps a mounted volume: a reader never sees half a file.
  "$kubectl" get secret demo-signing-keys -o jsonpath='{.data.active\.jwk}' | base64 -d > "$work/keys/active.jwk.tmp" && mv "$work/keys/active.jwk.tmp" "$work/keys/active.jwk"
}
sync_key
( while sleep 1; do sync_key 2>/dev/null; done ) &
track $!
app=$(port); proxy=$(port); admin=$(port)
"$work/tokencheck" echo --listen "127.0.0.1:$app" > "$work/app.log" 2>&1 &
track $!
bin/sidecar --listen "127.0.0.1:$proxy" --admin-listen "127.0.0.1:$admin" --upstream "http://127.0.0.1:$app" \
  --bundle-dir "$work/bundle" --policy-name demo --namespace default \
  --distribution-url "https://127.0.0.1:$dist" --distribution-token-file "$work/distribution-token" > "$work/sidecar.log" 2>&1 &
track $!
wait_http "http://127.0.0.1:$admin/readyz" "the sidecar"
for _ in $(seq 100); do
  curl -s "http://127.0.0.1:$admin/metrics" | grep -q '^tokenkeeper_sidecar_source{source="stream"} 1' && break
  sleep 0.1
done
curl -s "http://127.0.0.1:$admin/metrics" | grep -q '^tokenkeeper_sidecar_source{source="stream"} 1' || die "the sidecar did not subscribe (bin/demo/sidecar.log)"
echo "  the sidecar enforces the manager's pushed snapshot"
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
if ! grep -q "$now" "$work/bundle/jwks.json"; then
  echo "  (the sidecar's bundle copy does not hold ${now:0:8}: the new key arrived through the push)"
fi
try "the token signed before the rotation" 200 -H "Authorization: Bearer $token"
fresh=$(mint)
try "a token signed with the new key" 200 -H "Authorization: Bearer $fresh"
say "A token leaks: revoke its jti; the manager pushes the change to the sidecar"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
leaky=$(mint --jti leaked-1)
try "the token about to leak" 200 -H "Authorization: Bearer $leaky"
echo "  revoking jti leaked-1 in RevocationList incidents"
# The timed write goes through kubectl proxy, so the time is the push's, not kubectl's start-up.
api=$(port)
"$kubectl" proxy --port="$api" > "$work/kubectl-proxy.log" 2>&1 &
track $!
wait_http "http://127.0.0.1:$api/healthz" "kubectl proxy"
body=$(python3 -c 'import json,sys; print(json.dumps({"spec": {"tokens": [{"jti": "leaked-1", "expiresAt": sys.argv[1]}]}}))' "$(date -u -d '+10 min' +%Y-%m-%dT%H:%M:%SZ)")
t0=$(ms)
curl -fs -o /dev/null -X PATCH -H 'Content-Type: application/merge-patch+json' --data "$body" \
  "http://127.0.0.1:$api/apis/tokenkeeper.dev/v1alpha1/namespaces/default/revocationlists/incidents" || die "the RevocationList write failed"
written=$(ms)
took=""
for _ in $(seq 2000); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $leaky" "http://127.0.0.1:$proxy/api")" = 401 ] && { took=$(( $(ms) - t0 )); break; }
  sleep 0.005
done
[ -n "$took" ] || die "the revoked jti was still accepted 10 s after the write"
echo "  refused ${took} ms after the write was sent (the API server answered the write in $(( written - t0 )) ms)"
[ "$took" -lt 1000 ] || die "the revocation took ${took} ms, not under a second"
try "the revoked token" 401 -H "Authorization: Bearer $leaky"
grep -q leaked-1 "$work/bundle/revocations.yaml" && die "the bundle copy changed" || echo "  (the sidecar's bundle copy still has no revocation: it came through the push)"

say "Sidecar metrics: rejections by reason, and the push"
metrics=$(curl -s "http://127.0.0.1:$admin/metrics")
grep -E '^tokenkeeper_sidecar_(rejections_total|requests_total)' <<<"$metrics" | grep -v ' 0$' || true
# Each 401 above was refused for the reason it announced.
grep -E '^tokenkeeper_sidecar_distribution_' <<<"$metrics" || true
# (revoked_token twice: the first refusal of the loop above, then the shown one.)
for want in bad_signature=1 expired=1 missing_token=1 revoked_token=2; do
  reason=${want%=*} n=${want#*=}
  grep -qE "^tokenkeeper_sidecar_rejections_total\{reason=\"$reason\"\} $n\$" <<<"$metrics" || die "the sidecar did not count $n $reason rejection(s)"
done
say "Done. The control plane, manager and sidecar stop now."
