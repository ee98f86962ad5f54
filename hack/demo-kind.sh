#!/usr/bin/env bash
# make demo-kind: the whole story on a real kind cluster, step by step.
#  a SigningKey rotating into a Secret and a JWKS; a TokenPolicy; a Deployment that opts in and
#  gets the native sidecar; requests through its Service (200 / 401 / 403); a leaked key
#  revoked and replaced at once. DEMO_KEEP_CLUSTER=1 keeps the cluster afterwards.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cluster=${KIND_CLUSTER:-tokenkeeper-demo}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show_apply() { local y; y=$(cat); printf '%s\n' "$y"; printf '%s\n' "$y" | "$k" apply -f - >/dev/null; }

say "Creating a kind cluster (node image built from source and cached; KIND_NODE_IMAGE uses a published one)"
if [ -z "${DEMO_KEEP_CLUSTER:-}" ]; then trap 'say "Deleting the cluster"; hack/kind/cluster.sh down "$cluster" >/dev/null 2>&1 || true' EXIT; fi
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
pf=$!
trap 'kill $pf 2>/dev/null || true; [ -n "${DEMO_KEEP_CLUSTER:-}" ] || { say "Deleting the cluster"; hack/kind/cluster.sh down "$cluster" >/dev/null 2>&1 || true; }' EXIT
for _ in $(seq 40); do curl -s -o /dev/null http://127.0.0.1:18080/healthz && break; sleep 0.5; done
keyfile() { "$k" get secret -n shop orders-issuer-signing-keys -o jsonpath='{.data.active\.jwk}' | base64 -d > bin/demo/keys/active.jwk; }
mint() { keyfile; bin/demo/tokencheck mint --key-dir bin/demo/keys --issuer https://tokens.example.com/orders --audience orders --ttl 4m "$@"; }
try() {
  local label=$1 path=$2; shift 2
  printf '  %-46s -> %s\n' "$label" "$(curl -s -o /dev/null -w '%{http_code} %header{www-authenticate}' "$@" "http://127.0.0.1:18080$path")"
}
try "GET /healthz, no token (anonymous rule)" /healthz
try "GET /api, no token" /api
try "GET /api, a garbage token" /api -H "Authorization: Bearer not.a.token"
token=$(mint)
try "GET /api, a token from the Secret's key" /api -H "Authorization: Bearer $token"
try "GET /admin, same token (no role=admin)" /admin -H "Authorization: Bearer $token"

say "A key leaks: revoke it with a RevocationList; it leaves the JWKS and is replaced at once"
leaked=$("$k" get sk -n shop orders-issuer -o jsonpath='{.status.activeKID}')
cat <<YAML | show_apply
apiVersion: tokenkeeper.dev/v1alpha1
kind: RevocationList
metadata: {name: incident-42, namespace: shop}
spec:
  keys: [{kid: $leaked, reason: "leaked in a build log"}]
YAML
sleep 3
echo "  active key before: ${leaked:0:12}…  after: $("$k" get sk -n shop orders-issuer -o jsonpath='{.status.activeKID}' | cut -c1-12)…"
"$k" get events -n shop --field-selector involvedObject.name=orders-issuer -o custom-columns=REASON:.reason,MESSAGE:.message | grep -E 'Revoked|Emergency' || true
echo "  waiting for the sidecar's mounted bundle to follow (kubelet volume sync; an emergency rotation"
echo "  is the one case where new tokens wait for verifiers to learn the new key)…"
fresh=$(mint)
t0=$(date +%s)
for _ in $(seq 120); do
  old_code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" http://127.0.0.1:18080/api)
  new_code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $fresh" http://127.0.0.1:18080/api)
  [ "$old_code" = 401 ] && [ "$new_code" = 200 ] && break
  sleep 1
done
echo "  the sidecar followed in $(( $(date +%s) - t0 ))s"
try "GET /api, the token signed by the leaked key" /api -H "Authorization: Bearer $token"
try "GET /api, a token from the new key" /api -H "Authorization: Bearer $fresh"
say "Done"
