#!/usr/bin/env bash
# The tutorial release (examples/), run by `make demo` inside tests/cluster/run --triton:
# applies the DeployFlow and Service unchanged, drives the release with the grpcurl calls of
# examples/grpcurl-tutorial.md verbatim (Next, Pause, Resume, Get, Cancel, Scale), prints each
# reply, and shows each step: batch, phase, pods, endpoints.
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
# grpcurl is built by tests/cluster/build; the controller serves plaintext on localhost:8099.
grpcurl() { "$GRPCURL" "$@"; }
# call RPC: runs the tutorial's grpcurl call for RPC verbatim and prints its reply (compacted).
call() {
  local rpc=$1; shift
  echo "\$ grpcurl --plaintext -d '$meta' localhost:8099 deployflow.DeployFlow/$rpc"
  local out rc=0
  out=$(grpcurl --plaintext -d "$meta" localhost:8099 deployflow.DeployFlow/$rpc 2>&1) || rc=$?
  # Each reply as one line: phase, batch, paused, message; an error as grpcurl printed it.
  jq -rc '.deploy | "  reply: phase=\(.phase) batch=\(.conditions[-1].batch // 0)/\(.batches // 0) \(.conditions[-1].phase // "") paused=\(.paused // false) \(.message // "")"' <<<"$out" 2>/dev/null ||
    sed 's/^/  /' <<<"$out"
  return $rc
}
meta='{"deploy":{"name":"12122-sample-10010-df","namespace":"default"}}'

bold "apply examples/nginx-deployflow.yaml and examples/nginx-service.yaml (unchanged)"
kubectl apply -f "$repo/examples/nginx-service.yaml" -f "$repo/examples/nginx-deployflow.yaml"

bold "the canary batch runs and stops at Smoked: ContainersReady, not in the Service's ready endpoints"
await "canary Smoked" '.status.conditions[-1] | .batch == 1 and .phase == "Smoked"'

bold "Next #1: the canary is pulled in (gate True, pod Ready, ready endpoint verified)"
call Next
await "canary Baking" '.status.conditions[-1] | .batch == 1 and .phase == "Baking"'

bold "Pause and Resume: each streams the release until the controller shows the change"
call Pause
call Resume

bold "Next #2: the canary is baked; batch 2 waits"
call Next
await "batch 2 prepared" '.status.conditions[-1].batch == 2'

bold "Next #3: batches 2 and 3 run automatically, 10 s apart"
call Next
await "Success" '.status.phase == "Success"'

bold "Get, and Cancel of the finished release (refused: FailedPrecondition)"
call Get
call Cancel || true

pod=$(kubectl get pods -l app.kubernetes.io/instance=12122-sample-10010 -o jsonpath='{.items[0].metadata.name}')
bold "Scale to 2 replicas deleting $pod (the tutorial's <pod-name>)"
scale='{"instance":{"name":"12122-sample-10010","namespace":"default"},"replicas":2,"strategy":{"podsToDelete":["'$pod'"],"batchSize":"1","batches":"1","batchIntervalSeconds":10}}'
echo "\$ grpcurl --plaintext -d '$scale' localhost:8099 application.Application/Scale"
reply=$(grpcurl --plaintext -d "$scale" localhost:8099 application.Application/Scale)
echo "  reply: $(jq -c . <<<"$reply")"
scale_df=$(jq -r .deployName <<<"$reply")
deadline=$((SECONDS + 120))
until [[ $(kubectl get df "$scale_df" -o jsonpath='{.status.phase}') == Success ]]; do
  ((SECONDS < deadline)) || { echo "timed out waiting for $scale_df to succeed" >&2; exit 1; }
  sleep 0.5
done
echo "  $scale_df: Success; $pod $(kubectl get pod "$pod" >/dev/null 2>&1 && echo "still exists (unexpected)" || echo "deleted")"

bold "kubectl triton: the releases, and the tutorial's as a tree (README, \"kubectl triton\")"
echo "\$ kubectl triton list"
kubectl triton list
echo "\$ kubectl triton get $df"
kubectl triton get $df

bold "done"
kubectl get df
kubectl get clonesets.v1alpha1.apps.kruise.io,pods -o wide -l app=12122
echo "endpoints of $svc: $(endpoints)"
