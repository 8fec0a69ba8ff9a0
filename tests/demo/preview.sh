#!/usr/bin/env bash
# Demo preview (runs inside tests/cluster/run --triton; `make demo`). Until triton-controller
# lands, this script plays the controller's part by hand for the tutorial release
# (examples/: 3 replicas, batches of 1): it grows the tutorial's CloneSet batch by batch,
# shows each new pod born with the apps.triton.io/ready gate (injected by the real triton-webhook)
# and held out of the tutorial Service's endpoints, then flips the gate as the controller will on
# bake, and shows the pod pulled in. Everything else is real: kube-apiserver, Kruise, kwok,
# the EndpointSlice controller.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
svc=sample-12122-svc cs=12122-sample-10010
labels='{"app": "12122", "group": "10010", "app.kubernetes.io/name": "deploy-demo-hello", "app.kubernetes.io/instance": "12122-sample-10010", "managed-by": "triton-io"}'

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
endpoints() {
  kubectl get endpointslice -l kubernetes.io/service-name=$svc \
    -o jsonpath='{range .items[*].endpoints[*]}{.targetRef.name} {.addresses[0]} ready={.conditions.ready}{"\n"}{end}' | sort
}
# await_endpoint POD true|false: waits (30 s at most) for the pod's endpoint to reach that state.
await_endpoint() {
  local deadline=$((SECONDS + 30))
  until endpoints | grep -q "^$1 .* ready=$2"; do
    ((SECONDS < deadline)) || { echo "timed out waiting for $1's endpoint to be ready=$2" >&2; exit 1; }
    sleep 0.2
  done
}
show() {
  kubectl get pods -l app=12122 -o custom-columns='POD:.metadata.name,IP:.status.podIP,NODE:.spec.nodeName,GATES:.spec.readinessGates[*].conditionType,READY:.status.conditions[?(@.type=="Ready")].status'
  echo "endpoints of Service $svc:"; endpoints | sed 's/^/  /'
}

step "the tutorial Service (examples/nginx-service.yaml, unchanged)"
kubectl apply -f "$repo/examples/nginx-service.yaml"

step "the CloneSet a create release starts with (replicas 0, the tutorial's template and labels)"
kubectl create -f - <<YAML
{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
 "metadata": {"name": "$cs", "namespace": "default", "labels": $labels},
 "spec": {"replicas": 0, "selector": {"matchLabels": $labels},
   "template": {"metadata": {"labels": $labels},
     "spec": {"containers": [{"name": "12122-sample-10010-container", "image": "nginx:latest", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}}
YAML

for batch in 1 2 3; do
  step "batch $batch/3$([[ $batch == 1 ]] && echo ' (canary)'): replicas -> $batch"
  kubectl patch clonesets.v1alpha1.apps.kruise.io $cs --type=merge -p "{\"spec\":{\"replicas\":$batch}}" >/dev/null
  kubectl wait --for=jsonpath='{.status.replicas}'=$batch clonesets.v1alpha1.apps.kruise.io/$cs --timeout=60s >/dev/null
  new=$(kubectl get pods -l app=12122 -o json |
    jq -r '.items[] | select(([.status.conditions[]? | select(.type == "apps.triton.io/ready")] | length) == 0) | .metadata.name')
  for p in $new; do kubectl wait --for=condition=ContainersReady pod/$p --timeout=60s >/dev/null; done
  echo "smoked: new pod(s) $new ContainersReady, gated out of the Service:"
  for p in $new; do await_endpoint "$p" false; done
  show
  echo "bake: setting apps.triton.io/ready=True on $new (what triton-controller does on Next/bake)"
  for p in $new; do
    kubectl patch pod $p --subresource=status --type=strategic \
      -p '{"status":{"conditions":[{"type":"apps.triton.io/ready","status":"True","reason":"Baked"}]}}' >/dev/null
    kubectl wait --for=condition=Ready pod/$p --timeout=30s >/dev/null
  done
  for p in $new; do await_endpoint "$p" true; done
  echo "pulled in:"
  show
done
step "done: 3/3 pods baked and ready in the Service's endpoints"
