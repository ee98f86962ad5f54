#!/usr/bin/env bash
# make demo-kind: the whole story on a real kind cluster, step by step.
#  a SigningKey rotating into a Secret and a JWKS; a TokenPolicy; a Deployment that opts in and
#  gets the native sidecar; requests through its Service (200 / 401 / 403); a leaked key
#  revoked and replaced at once. DEMO_KEEP_CLUSTER=1 keeps the cluster afterwards.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cluster=${KIND_CLUSTER:-tokenkeeper-demo}
. hack/lib.sh
show_apply() { local y; y=$(cat); printf '%s\n' "$y"; printf '%s\n' "$y" | "$k" apply -f - >/dev/null; }

say "Creating a kind cluster (node image built from source and cached; KIND_NODE_IMAGE uses a published one)"
if [ -z "${DEMO_KEEP_CLUSTER:-}" ]; then on_exit 'say "Deleting the cluster"; hack/kind/cluster.sh down "$cluster" >/dev/null 2>&1'; fi
# Assigned before export: `export X=$(cmd)` would hide cmd's exit status from set -e.
KUBECONFIG=$(hack/kind/cluster.sh up "$cluster"); export KUBECONFIG
k="$(hack/kube-binaries.sh kubectl)/kubectl"

say "Installing tokenkeeper with kubectl apply -k config/default"
hack/kind/deploy.sh "$cluster"
"$k" get pods -n tokenkeeper-system

say "A SigningKey: ES256, active 30s, published 15s ahead, retired keys kept 60s"
"$k" create namespace shop --dry-run=client -o yaml | "$k" apply -f - >/dev/null
cat <<'YAML' | show_apply
apiVersion: tokenkeeper.dev/v1alpha1
kind: SigningKey
metadata: {name: orders-issuer, namespace: shop}
spec:
  algorithm: ES256
  issuer: https://tokens.example.com/orders
  rotation: {interval: 30s, publishAhead: 15s, retainFor: 60s}
YAML
"$k" wait -n shop sk/orders-issuer --for=condition=Ready --timeout=90s
"$k" get sk -n shop

say "A TokenPolicy and an app that opts in to the sidecar"
image=tokenkeeper/e2e-tokencheck:dev
cat <<YAML | show_apply
apiVersion: tokenkeeper.dev/v1alpha1
kind: TokenPolicy
metadata: {name: orders-api, namespace: shop}
spec:
  issuer: https://tokens.example.com/orders
  audiences: [orders]
  trustedKeys: [{signingKeyRef: {name: orders-issuer}}]
  maxTokenLifetime: 5m
  clockSkew: 30s
  rules:
  - {pathPrefix: /healthz, anonymous: true}
  - {pathPrefix: /admin, requiredClaims: [{name: role, values: [admin]}]}
  forwardClaims: [{claim: sub, header: X-User}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  template:
    metadata:
      labels: {app: orders}
      annotations: {tokenkeeper.dev/inject: "true", tokenkeeper.dev/policy: orders-api}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532}
      containers:
      - name: orders
        image: $image
        imagePullPolicy: Never
        args: [echo, --listen=127.0.0.1:8080]
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec: {selector: {app: orders}, ports: [{port: 80, targetPort: http}]}
YAML
"$k" rollout status -n shop deploy/orders --timeout=180s
"$k" get tp -n shop
echo "The pod's containers (the sidecar is a native sidecar: an init container with restartPolicy Always):"
"$k" get pods -n shop -l app=orders -o jsonpath='{range .items[0].spec.initContainers[*]}  init: {.name} restartPolicy={.restartPolicy} port={.ports[0].name}:{.ports[0].containerPort}{"\n"}{end}{range .items[0].spec.containers[*]}  app:  {.name} port={.ports[0].name}:{.ports[0].containerPort}{"\n"}{end}'

say "Requests through the Service (kubectl port-forward svc/orders)"
go build -o bin/demo/ ./test/e2e/tokencheck
mkdir -p bin/demo/keys
"$k" port-forward -n shop svc/orders 18080:80 > bin/demo/port-forward.log 2>&1 &
track $!
wait_http http://127.0.0.1:18080/healthz "the port-forward to svc/orders"
keyfile() { "$k" get secret -n shop orders-issuer-signing-keys -o jsonpath='{.data.active\.jwk}' | base64 -d > bin/demo/keys/active.jwk; }
mint() { keyfile; bin/demo/tokencheck mint --key-dir bin/demo/keys --issuer https://tokens.example.com/orders --audience orders --ttl 4m "$@"; }
try() { # label, expected status, path, curl arguments
  local label=$1 want=$2 path=$3; shift 3
  expect "$label" "$want" "$@" "http://127.0.0.1:18080$path"
}
try "GET /healthz, no token (anonymous rule)" 200 /healthz
try "GET /api, no token" 401 /api
try "GET /api, a garbage token" 401 /api -H "Authorization: Bearer not.a.token"
token=$(mint)
try "GET /api, a token from the Secret's key" 200 /api -H "Authorization: Bearer $token"
try "GET /admin, same token (no role=admin)" 403 /admin -H "Authorization: Bearer $token"

ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Timed writes go through kubectl proxy, so a time is the push's, not kubectl's start-up.
"$k" proxy --port=18081 > bin/demo/kubectl-proxy.log 2>&1 &
track $!
wait_http http://127.0.0.1:18081/healthz "kubectl proxy"
create_rl() { # name spec-json
  curl -fs -o /dev/null -X POST -H 'Content-Type: application/json' \
    --data "{\"apiVersion\": \"tokenkeeper.dev/v1alpha1\", \"kind\": \"RevocationList\", \"metadata\": {\"name\": \"$1\", \"namespace\": \"shop\"}, \"spec\": $2}" \
    http://127.0.0.1:18081/apis/tokenkeeper.dev/v1alpha1/namespaces/shop/revocationlists || die "creating RevocationList $1 failed"
}
# until_status TOKEN CODE: calls /api until it answers CODE (10 s at most), prints the ms it took.
until_status() {
  local t0; t0=$(ms)
  for _ in $(seq 1000); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" http://127.0.0.1:18080/api)" = "$2" ] && { echo $(( $(ms) - t0 )); return 0; }
    sleep 0.01
  done
  return 1
}

say "A token leaks: revoke its jti; the manager pushes the change to the sidecar (no volume sync)"
leaked_token=$(mint --jti leaked-1)
try "GET /api, the token about to leak" 200 /api -H "Authorization: Bearer $leaked_token"
exp=$(date -u -d '+10 min' +%Y-%m-%dT%H:%M:%SZ)
echo "  RevocationList incident-41: tokens: [{jti: leaked-1, expiresAt: $exp}]"
t0=$(ms)
create_rl incident-41 "{\"tokens\": [{\"jti\": \"leaked-1\", \"expiresAt\": \"$exp\"}]}"
until_status "$leaked_token" 401 >/dev/null || die "the revoked jti was still accepted after 10 s"
el=$(( $(ms) - t0 ))
echo "  the sidecar rejected the revoked jti ${el} ms after the write was sent"
[ "$el" -lt 1000 ] || die "the revocation took ${el} ms, not under a second"
try "GET /api, the revoked token" 401 /api -H "Authorization: Bearer $leaked_token"

say "A key leaks: revoke it with a RevocationList; it leaves the JWKS and is replaced at once"
leaked=$("$k" get sk -n shop orders-issuer -o jsonpath='{.status.activeKID}')
echo "  RevocationList incident-42: keys: [{kid: $leaked, reason: leaked in a build log}]"
t0=$(ms)
create_rl incident-42 "{\"keys\": [{\"kid\": \"$leaked\", \"reason\": \"leaked in a build log\"}]}"
until_status "$token" 401 >/dev/null || die "the revoked key still verified after 10 s"
el=$(( $(ms) - t0 ))
echo "  the sidecar rejected the leaked key's token ${el} ms after the write was sent"
[ "$el" -lt 1000 ] || die "the key revocation took ${el} ms, not under a second"
for _ in $(seq 100); do
  now=$("$k" get sk -n shop orders-issuer -o jsonpath='{.status.activeKID}')
  [ -n "$now" ] && [ "$now" != "$leaked" ] && break
  sleep 0.1
done
[ "$now" != "$leaked" ] || die "no replacement key became active"
echo "  active key before: ${leaked:0:12}…  after: ${now:0:12}…"
"$k" get events -n shop --field-selector involvedObject.name=orders-issuer -o custom-columns=REASON:.reason,MESSAGE:.message | grep -E 'Revoked|Emergency' || true
fresh=$(mint)
took=$(until_status "$fresh" 200) || die "the replacement key's token was not accepted within 10 s"
echo "  a token of the replacement key was accepted after ${took} ms more (the push carries the new key too)"
try "GET /api, the token signed by the leaked key" 401 /api -H "Authorization: Bearer $token"
try "GET /api, a token from the new key" 200 /api -H "Authorization: Bearer $fresh"
say "Done"
