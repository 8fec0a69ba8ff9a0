#!/usr/bin/env bash
# The tutorial release (examples/), run by `make demo` inside tests/cluster/run --triton:
# applies the DeployFlow and Service unchanged, moves the release forward with the spec patches
# gRPC `Next` writes (reference §3.5), and shows each step: batch, phase, pods, endpoints.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
df=12122-sample-10010-df svc=sample-12122-svc

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
status() {
  kubectl get df $df -o jsonpath='{.status.phase}{" | batch "}{.status.conditions[-1].batch}{"/"}{.status.batches}{" "}{.status.conditions[-1].phase}{" | pods "}{range .status.conditions[-1].pods[*]}{.name}{"("}{.phase}{","}{.pullInStatus}{") "}{end}{" | "}{.status.message}'
}
endpoints() {
  kubectl get endpointslice -l kubernetes.io/service-name=$svc \
    -o jsonpath='{range .items[*].endpoints[*]}{.targetRef.name}={.conditions.ready} {end}'
}
# await DESCRIPTION JSONPATH-CONDITION: prints progress until the DeployFlow matches, 120 s at most.
await() {
  local what=$1 expr=$2 deadline=$((SECONDS + 120)) last=
  while :; do
    local line; line="$(status) | endpoints: $(endpoints)"
    [[ $line != "$last" ]] && { echo "  $line"; last=$line; }
    kubectl get df $df -o json | jq -e "$expr" >/dev/null && return 0
    ((SECONDS < deadline)) || { echo "timed out waiting for $what" >&2; exit 1; }
    sleep 0.5
  done
}
next() { # the patch gRPC Next writes
  echo "Next: spec.updateStrategy <- $1"
  kubectl patch df $df --type=merge -p "{\"spec\":{\"updateStrategy\":$1}}" >/dev/null
}

bold "apply examples/nginx-deployflow.yaml and examples/nginx-service.yaml (unchanged)"
kubectl apply -f "$repo/examples/nginx-service.yaml" -f "$repo/examples/nginx-deployflow.yaml"

bold "the canary batch runs and stops at Smoked: ContainersReady, not in the Service's ready endpoints"
await "canary Smoked" '.status.conditions[-1] | .batch == 1 and .phase == "Smoked"'

bold "Next #1: the canary is pulled in (gate True, pod Ready, ready endpoint verified)"
next '{"batches":1,"stage":"Baking"}'
await "canary Baking" '.status.conditions[-1] | .batch == 1 and .phase == "Baking"'

bold "Next #2: the canary is baked; batch 2 waits"
next '{"stage":"Baked"}'
await "batch 2 prepared" '.status.conditions[-1].batch == 2'

bold "Next #3: batches 2 and 3 run automatically, 10 s apart"
next '{"batches":3,"stage":"Baked"}'
await "Success" '.status.phase == "Success"'

bold "done"
kubectl get df $df
kubectl get clonesets.v1alpha1.apps.kruise.io,pods -o wide -l app=12122
echo "endpoints of $svc: $(endpoints)"
