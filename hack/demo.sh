#!/usr/bin/env bash
# make demo: a local control plane (source-built kube-apiserver + etcd), the CRDs, the
# manager, and a SigningKey with a short rotation interval, watched live as its keys move
# Next -> Active -> Retired -> removed and the published JWKS follows.
#
#   DEMO_SECONDS=90 hack/demo.sh     (how long to watch; default 75)
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
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting a local control plane (kube-apiserver $(basename "$assets" | cut -d- -f1) and etcd, built from source)"
go build -o "$work/localcluster" ./hack/localcluster
"$work/localcluster" --write-kubeconfig "$KUBECONFIG" > "$work/localcluster.log" 2>&1 &
pids+=($!)
for _ in $(seq 120); do [ -s "$KUBECONFIG" ] && break; sleep 0.5; done
[ -s "$KUBECONFIG" ] || { cat "$work/localcluster.log"; echo "control plane did not start"; exit 1; }
"$kubectl" get crd -o custom-columns=INSTALLED_CRD:.metadata.name

say "Starting the manager (logs in bin/demo/manager.log)"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
disc=$(port)
bin/manager --webhook-port=0 --metrics-bind-address="127.0.0.1:$(port)" --health-probe-bind-address="127.0.0.1:$(port)" \
  --discovery-bind-address="127.0.0.1:$disc" > "$work/manager.log" 2>&1 &
pids+=($!)

say "Applying a SigningKey: ES256, active 20s, published 6s ahead, retired keys kept 15s"
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
    retainFor: 15s
YAML
"$kubectl" apply -f "$work/signingkey.yaml"

say "Watching the keys (Ready, Active Key and Next Rotation are printer columns of kubectl get sk)"
short() { cut -c1-10; }
last=""
end=$(( $(date +%s) + ${DEMO_SECONDS:-75} ))
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
say "Done. The control plane and manager stop now."
