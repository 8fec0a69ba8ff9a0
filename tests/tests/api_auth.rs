//! The API's authentication and authorization, over TLS, against the real control plane: a
//! second controller (a standby: the harness's controller holds the Lease) serves the API with
//! auth on; each caller is a real ServiceAccount token checked by TokenReview and each call a
//! SubjectAccessReview. The standby answers; the leader acts on what it wrote.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tonic::Code;
use triton_e2e::api::*;
use triton_e2e::deployflow::canary_waiting;
use triton_e2e::tls::TestPki;
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(120);

#[tokio::test]
async fn the_api_refuses_callers_without_a_valid_token_or_rbac_and_a_standby_serves_what_the_leader_does()
 {
    let client = client().await;
    let ns = namespace(&client, "api-auth").await;
    let dir = std::env::temp_dir().join(format!("triton-api-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = TestPki::new(&["localhost", "127.0.0.1"]);
    let (cert, key, ca) = (dir.join("tls.crt"), dir.join("tls.key"), dir.join("ca.crt"));
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let standby = Standby::start(
        (8121, 8122, 8123),
        Some((cert.to_str().unwrap(), key.to_str().unwrap())),
    )
    .await;
    let df = canary_waiting(&client, &ns, "auth").await;
    let lease = Api::<Lease>::namespaced(client.clone(), "triton-system")
        .get("triton-controller")
        .await
        .unwrap();
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        !holder.starts_with("standby"),
        "the standby must not lead: {holder}"
    );

    let operator = service_account_token(&client, &ns, "operator", true, None).await;
    let nobody = service_account_token(&client, &ns, "nobody", false, None).await;
    let agent_audience =
        service_account_token(&client, &ns, "operator", true, Some("triton-agent")).await;
    let mut c = DeployFlowClient::new(tls_channel(&standby.grpc, &pki.ca_pem).await);
    let get = |token: Option<&str>| {
        let m = pb::DeployMetaRequest {
            deploy: meta(&ns, &df.name),
        };
        match token {
            Some(t) => with_token(m, t),
            None => tonic::Request::new(m),
        }
    };

    let e = c.get(get(None)).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = c
        .get(get(Some("not-a-token")))
        .await
        .expect_err("a bad token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = c
        .get(get(Some(&agent_audience)))
        .await
        .expect_err("a token for another audience");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = c
        .next(with_token(
            pb::NextRequest {
                deploy: meta(&ns, &df.name),
            },
            &nobody,
        ))
        .await
        .expect_err("no RBAC");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("patch") && e.message().contains("deployflows"),
        "{e:?}"
    );
    assert_eq!(
        df.status().await["conditions"][0]["phase"],
        "Smoked",
        "a refused Next writes nothing"
    );

    // Bound to triton-release-operator: allowed; the standby writes, the leader acts.
    let d = c
        .get(get(Some(&operator)))
        .await
        .unwrap()
        .into_inner()
        .deploy
        .unwrap();
    assert_eq!(d.name, df.name);
    c.next(with_token(
        pb::NextRequest {
            deploy: meta(&ns, &df.name),
        },
        &operator,
    ))
    .await
    .unwrap_or_else(|e| panic!("Next through the standby: {e:?}"));
    df.wait_batch(1, "Baking", LONG).await;

    // The same over REST: 401 without a valid token, 403 without RBAC, 200 with it.
    let url = format!(
        "https://localhost:{}/api/v1/namespaces/{ns}/deployflows/{}",
        8122, df.name
    );
    let ca = ca.to_str().unwrap();
    let r = rest("GET", &url, None, None, Some(ca)).await;
    assert_eq!(
        (r.0, r.1["code"].clone()),
        (401, serde_json::json!(7)),
        "{r:?}"
    );
    let r = rest("GET", &url, None, Some(&nobody), Some(ca)).await;
    assert_eq!(r.0, 403, "{r:?}");
    assert!(r.1["msg"].as_str().unwrap_or("").contains("get"), "{r:?}");
    let r = rest("GET", &url, None, Some(&operator), Some(ca)).await;
    assert_eq!(
        (r.0, r.1["data"]["name"].clone()),
        (200, serde_json::json!(df.name)),
        "{r:?}"
    );

    let r = rest(
        "POST",
        &format!("{url}/next"),
        None,
        Some(&nobody),
        Some(ca),
    )
    .await;
    assert_eq!(r.0, 403, "a REST write without RBAC: {r:?}");

    // A client that goes away frees its stream (this standby serves only this test's streams).
    let open = |admin: String| async move {
        http_get(&admin, "/metrics")
            .await
            .lines()
            .find_map(|l| l.strip_prefix("triton_controller_api_streams "))
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    assert_eq!(open(standby.admin.clone()).await, Some(0));
    let stream = c
        .watch(with_token(
            pb::WatchRequest {
                deploy: meta(&ns, &df.name),
                target: Some(pb::TargetState {
                    stage: "Baked".into(),
                    batches: 3,
                }),
            },
            &operator,
        ))
        .await
        .unwrap()
        .into_inner();
    eventually("the Watch counted", Duration::from_secs(10), || {
        let admin = standby.admin.clone();
        async move {
            if open(admin).await == Some(1) {
                Ok(())
            } else {
                Err("not yet")
            }
        }
    })
    .await;
    drop(stream);
    drop(c);
    eventually("the dropped Watch freed", Duration::from_secs(10), || {
        let admin = standby.admin.clone();
        async move {
            match open(admin).await {
                Some(0) => Ok(()),
                other => Err(format!("{other:?} streams open")),
            }
        }
    })
    .await;
    standby.stop().await;
}
