//! Clients of triton-controller's API for the end-to-end tests and the benchmarks: the tonic
//! client generated from `proto/`, grpcurl (built by tests/cluster/build), curl for REST,
//! ServiceAccount tokens, and a second (standby) controller serving the API with auth.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
pub use triton_proto::{application as app, deployflow as pb, pod as podpb};

use crate::{http_ok, testenv_var};

pub type DeployFlowClient = pb::deploy_flow_client::DeployFlowClient<Channel>;
pub type ApplicationClient = app::application_client::ApplicationClient<Channel>;
pub type PodClient = podpb::pod_client::PodClient<Channel>;

/// The harness controller's gRPC address (plaintext, no auth).
pub fn grpc_addr() -> String {
    testenv_var("TRITON_API_GRPC")
}

/// The harness controller's REST address (plaintext, no auth).
pub fn rest_addr() -> String {
    testenv_var("TRITON_API_REST")
}

/// A plaintext channel to `addr`.
pub async fn channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to the gRPC API at {addr}: {e}"))
}

/// A TLS channel to `addr`, trusting `ca_pem`, for the server name `localhost`.
pub async fn tls_channel(addr: &str, ca_pem: &str) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS config")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting over TLS to the gRPC API at {addr}: {e}"))
}

pub fn meta(ns: &str, name: &str) -> Option<pb::DeployMeta> {
    Some(pb::DeployMeta {
        namespace: ns.into(),
        name: name.into(),
    })
}

pub fn instance(ns: &str, name: &str) -> Option<app::InstanceMeta> {
    Some(app::InstanceMeta {
        namespace: ns.into(),
        name: name.into(),
    })
}

/// `msg` with `authorization: Bearer <token>`.
pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    r
}

/// Runs grpcurl with `args`; returns (success, stdout, stderr).
pub async fn grpcurl(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(testenv_var("GRPCURL"))
        .args(args)
        .output()
        .await
        .expect("run grpcurl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON messages grpcurl printed (one after another, pretty-printed).
pub fn grpcurl_messages(stdout: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(stdout)
        .into_iter::<Value>()
        .map(|v| v.expect("grpcurl prints JSON"))
        .collect()
}

/// A REST call with curl: (HTTP status, JSON body or Null).
pub async fn rest(
    method: &str,
    url: &str,
    body: Option<&Value>,
    token: Option<&str>,
    ca_file: Option<&str>,
) -> (u16, Value) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", url]);
    if let Some(b) = body {
        cmd.args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            &b.to_string(),
        ]);
    }
    if let Some(t) = token {
        cmd.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    if let Some(ca) = ca_file {
        cmd.args(["--cacert", ca]);
    }
    let out = cmd.output().await.expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code: u16 = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl {method} {url} gave no status: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A ServiceAccount `name` in `ns` and a token for it (for `audience`, else the API
/// server's), bound to ClusterRole `triton-release-operator` in `ns` when `bind`.
pub async fn service_account_token(
    client: &Client,
    ns: &str,
    name: &str,
    bind: bool,
    audience: Option<&str>,
) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match sas.create(&PostParams::default(), &sa).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create ServiceAccount {ns}/{name}: {e}"),
    }
    if bind {
        let rb: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-release-operator")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "triton-release-operator"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        }))
        .unwrap();
        match Api::<RoleBinding>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &rb)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("bind {ns}/{name} to triton-release-operator: {e}"),
        }
    }
    let request: TokenRequest = serde_json::from_value(json!({"spec": {
        "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
        "expirationSeconds": 3600,
    }}))
    .unwrap();
    sas.create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("token for {ns}/{name}: {e}"))
        .status
        .expect("token in status")
        .token
        .expect("a token")
}

/// A second triton-controller (it waits for the Lease, so it is a standby while the harness's
/// controller leads) serving the API with authentication and authorization on.
pub struct Standby {
    pub grpc: String,
    pub rest: String,
    pub admin: String,
    child: tokio::process::Child,
}

impl Standby {
    /// Starts it on the given ports; over TLS with `cert`/`key` files when given.
    pub async fn start(ports: (u16, u16, u16), tls: Option<(&str, &str)>) -> Standby {
        let (grpc, rest, admin) = (
            format!("127.0.0.1:{}", ports.0),
            format!("127.0.0.1:{}", ports.1),
            format!("127.0.0.1:{}", ports.2),
        );
        let mut cmd = tokio::process::Command::new(testenv_var("TRITON_CONTROLLER_START"));
        cmd.env("POD_NAME", format!("standby-{}", ports.0))
            .env("TRITON_CONTROLLER_ADMIN_OVERRIDE", &admin)
            .env("TRITON_CONTROLLER_GRPC_LISTEN", &grpc)
            .env("TRITON_CONTROLLER_REST_LISTEN", &rest)
            .env(
                "TRITON_CONTROLLER_AGENT_LISTEN",
                format!("127.0.0.1:{}", ports.2 + 1000),
            )
            .env("TRITON_CONTROLLER_INSECURE_ANONYMOUS", "false")
            .kill_on_drop(true);
        if let Some((cert, key)) = tls {
            cmd.env("TRITON_CONTROLLER_API_TLS_CERT", cert)
                .env("TRITON_CONTROLLER_API_TLS_KEY", key);
        }
        let mut child = cmd.spawn().expect("start a standby triton-controller");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !http_ok(&admin, "/readyz").await {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the standby controller exited ({status}) before it was ready: see triton-controller.log"
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after 30s waiting for the standby controller's caches synced (/readyz on {admin})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Standby {
            grpc,
            rest,
            admin,
            child,
        }
    }

    /// The triton-controller's process id (the start script `exec`s it, so it is the child's).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops it (SIGKILL; it holds no Lease).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
