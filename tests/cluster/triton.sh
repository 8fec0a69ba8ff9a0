# Sourced by tests/cluster/run --triton, inside the namespaces, once the control plane is up:
# starts triton-webhook on https://127.0.0.1:8443 with a certificate made by triton-certs and
# registers deploy/'s MutatingWebhookConfiguration pointing at it by URL; installs the DeployFlow CRD
# and starts triton-controller.
#
# Exported to CMD:
#   TRITON_WEBHOOK_DIR    certificates: certs/{ca.crt,ca.key}, and the served tls.crt / tls.key
#   TRITON_WEBHOOK_START  a script that starts the webhook again (after a test stopped it)
#   TRITON_WEBHOOK_ADDR   127.0.0.1:8443 (HTTPS), TRITON_WEBHOOK_ADMIN 127.0.0.1:9090 (HTTP)
#   PATH                  with kubectl-triton (the kubectl plugin) on it
#   TRITON_INSTALL        deploy (default: deploy/'s manifests) or helm (the chart, installed as
#                         release `triton` in triton-system; TRITON_HELM_SETS: the --set flags used)
TB=$TESTENV_TRITON_BIN
W=$T/triton-webhook
mkdir -p "$W"
"$TB/triton-certs" webhook --out "$W/certs" --service triton-webhook --no-service-names \
  --ip 127.0.0.1 --dns localhost --days 2 --ca-days 2 2>>"$L/triton-certs.log" ||
  die "triton-certs failed: $(tail -3 "$L/triton-certs.log")"
cp "$W/certs/tls.crt" "$W/certs/tls.key" "$W/"
export TRITON_WEBHOOK_DIR=$W TRITON_WEBHOOK_START=$T/start-triton-webhook
export TRITON_WEBHOOK_ADDR=127.0.0.1:8443 TRITON_WEBHOOK_ADMIN=127.0.0.1:9090
cat >"$TRITON_WEBHOOK_START" <<SCRIPT
#!/bin/sh
exec "$TB/triton-webhook" --listen=$TRITON_WEBHOOK_ADDR --admin-listen=$TRITON_WEBHOOK_ADMIN \
  --tls-cert="$W/tls.crt" --tls-key="$W/tls.key" --cert-reload-interval=1s --shutdown-grace=3s \
  --log-format=text >>"$L/triton-webhook.log" 2>&1
SCRIPT
chmod +x "$TRITON_WEBHOOK_START"
"$TRITON_WEBHOOK_START" &
pids+=($!) names+=(triton-webhook)
wait_for triton-webhook 30 curl -fsS "http://$TRITON_WEBHOOK_ADMIN/readyz"

if [[ ${TRITON_INSTALL:-deploy} == helm ]]; then
  # The chart installs everything (CRD, RBAC, ServiceAccounts, Deployments, the webhook
  # configuration); the webhook configuration points at the local webhook by URL, and the
  # binaries run as processes (below) with the chart's ServiceAccount and RBAC.
  export TRITON_HELM_SETS="--set webhook.url=https://$TRITON_WEBHOOK_ADDR/mutate-pods --set webhook.certificate.caBundle=$(cat "$W/certs/ca-bundle.b64")"
  # shellcheck disable=SC2086
  helm install triton "$repo/deploy/helm/triton" -n triton-system --create-namespace $TRITON_HELM_SETS \
    >"$L/helm-install.log" 2>&1 || die "helm install failed: $(tail -5 "$L/helm-install.log")"
else
  # deploy/'s configuration, with the in-cluster Service reference replaced by the local URL.
  kubectl create --dry-run=client -o json -f "$repo/deploy/webhook/mutatingwebhookconfiguration.yaml" |
    jq --arg url "https://$TRITON_WEBHOOK_ADDR/mutate-pods" --arg ca "$(cat "$W/certs/ca-bundle.b64")" \
      '.webhooks[].clientConfig = {url: $url, caBundle: $ca}' |
    kubectl apply -f - >/dev/null
fi
# The API server picks the configuration up asynchronously: wait until a server-side dry run of a
# managed pod comes back with the gate.
kubectl create namespace triton-testenv >/dev/null
cat >"$T/probe-pod.json" <<'JSON'
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "webhook-probe", "namespace": "triton-testenv", "labels": {"managed-by": "triton-io"},
   "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "probe",
     "uid": "00000000-0000-0000-0000-000000000000"}]},
 "spec": {"containers": [{"name": "main", "image": "probe"}]}}
JSON
webhook_active() {
  kubectl create --dry-run=server -o json -f "$T/probe-pod.json" |
    jq -e '.spec.readinessGates | map(.conditionType) | index("apps.triton.io/ready")'
}
wait_for "the API server calling triton-webhook" 30 webhook_active

# The DeployFlow CRD (crds/) and triton-controller, with the admin kubeconfig.
[[ ${TRITON_INSTALL:-deploy} == helm ]] ||
  kubectl apply --server-side --field-manager=testenv -f "$repo/crds/deployflows.yaml" >/dev/null
wait_for "DeployFlow CRD established" 30 \
  kubectl wait --for condition=established --timeout=1s crd/deployflows.apps.triton.io
# The controller runs as deploy/'s ServiceAccount with deploy/'s RBAC, so every test checks that
# the ClusterRole grants what the controller uses.
if [[ ${TRITON_INSTALL:-deploy} != helm ]]; then
  kubectl create namespace triton-system >/dev/null
  kubectl apply -n triton-system -f "$repo/deploy/controller/rbac.yaml" >/dev/null
fi
token=$(kubectl create token triton-controller -n triton-system --duration=48h)
cat >"$T/controller.kubeconfig" <<EOF2
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster: {server: $APISERVER, certificate-authority: $P/ca.crt}
users:
- name: triton-controller
  user: {token: $token}
contexts:
- name: testenv
  context: {cluster: testenv, user: triton-controller}
current-context: testenv
EOF2
# The API serves plaintext without auth (--insecure-anonymous) on 127.0.0.1, so the tutorial's
# grpcurl --plaintext calls run verbatim; a test that starts a second controller gives it other
# ports (TRITON_CONTROLLER_GRPC_LISTEN/REST_LISTEN) and, for the auth tests, TLS and auth.
export TRITON_CONTROLLER_START=$T/start-triton-controller TRITON_CONTROLLER_ADMIN=127.0.0.1:8000
export TRITON_API_GRPC=127.0.0.1:8099 TRITON_API_REST=127.0.0.1:8088 GRPCURL=$TESTENV_BIN/grpcurl
export TRITON_AGENT_SERVICE=127.0.0.1:8097 TRITON_AGENT_BIN=$TB/triton-agent
# The kubectl plugin, found by kubectl as `kubectl triton` (a directory of its own on PATH).
mkdir -p "$T/plugins" && ln -s "$TB/kubectl-triton" "$T/plugins/kubectl-triton"
export PATH="$T/plugins:$PATH"
[[ -x $GRPCURL ]] || die "grpcurl missing in $TESTENV_BIN (tests/cluster/build builds it)"
cat >"$TRITON_CONTROLLER_START" <<SCRIPT
#!/bin/sh
: "\${TRITON_CONTROLLER_GRPC_LISTEN:=$TRITON_API_GRPC}" "\${TRITON_CONTROLLER_REST_LISTEN:=$TRITON_API_REST}"
: "\${TRITON_CONTROLLER_INSECURE_ANONYMOUS:=true}"
: "\${TRITON_CONTROLLER_AGENT_LISTEN:=$TRITON_AGENT_SERVICE}" "\${TRITON_CONTROLLER_AGENT_STALENESS:=6s}"
export TRITON_CONTROLLER_GRPC_LISTEN TRITON_CONTROLLER_REST_LISTEN TRITON_CONTROLLER_INSECURE_ANONYMOUS
export TRITON_CONTROLLER_AGENT_LISTEN TRITON_CONTROLLER_AGENT_STALENESS
KUBECONFIG="$T/controller.kubeconfig" exec "$TB/triton-controller" --admin-listen=\${TRITON_CONTROLLER_ADMIN_OVERRIDE:-$TRITON_CONTROLLER_ADMIN} \
  --leader-election-namespace=triton-system --lease-duration=4s --lease-grace=2s \
  --log-format=text >>"$L/triton-controller.log" 2>&1
SCRIPT
chmod +x "$TRITON_CONTROLLER_START"
"$TRITON_CONTROLLER_START" &
pids+=($!) names+=(triton-controller)
wait_for triton-controller 30 curl -fsS "http://$TRITON_CONTROLLER_ADMIN/readyz"
