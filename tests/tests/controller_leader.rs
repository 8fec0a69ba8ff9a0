//! Leader election (tests/cluster/run --triton): a second triton-controller waits while the
//! first holds the Lease, takes over when the first dies, and releases progress under it. One
//! test in its own binary (it stops the harness's controller, then restores it).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use triton_e2e::deployflow::released;
use triton_e2e::*;

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("triton-controller")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

#[tokio::test]
async fn a_second_controller_waits_for_the_lease_and_takes_over_when_the_leader_dies() {
    let client = client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "triton-system");
    let start =
        std::env::var("TRITON_CONTROLLER_START").expect("set by tests/cluster/run --triton");
    let first = eventually(
        "the harness's controller to hold the Lease",
        Duration::from_secs(30),
        || async { holder(&leases).await.ok_or("no holder") },
    )
    .await;

    tokio::process::Command::new(&start)
        .env("POD_NAME", "second")
        .env("TRITON_CONTROLLER_ADMIN_OVERRIDE", "127.0.0.1:8001")
        .env("TRITON_CONTROLLER_GRPC_LISTEN", "127.0.0.1:8101")
        .env("TRITON_CONTROLLER_REST_LISTEN", "127.0.0.1:8102")
        .env("TRITON_CONTROLLER_AGENT_LISTEN", "127.0.0.1:8103")
        .spawn()
        .expect("start a second controller");
    eventually(
        "the second controller's caches synced",
        Duration::from_secs(30),
        || async {
            if http_ok("127.0.0.1:8001", "/readyz").await {
                Ok(())
            } else {
                Err("not ready")
            }
        },
    )
    .await;
    holds_for(
        "the first controller keeping the Lease",
        Duration::from_secs(3),
        || async {
            match holder(&leases).await {
                Some(h) if h == first => Ok(()),
                other => Err(format!("holder is {other:?}")),
            }
        },
    )
    .await;

    let killed = signal_processes("-KILL", "triton-controller --admin-listen=127.0.0.1:8000").await;
    assert!(killed, "the first controller was running");
    eventually(
        "the second controller to take the Lease",
        Duration::from_secs(20),
        || async {
            match holder(&leases).await {
                Some(h) if h == "second" => Ok(()),
                other => Err(format!("holder is {other:?}")),
            }
        },
    )
    .await;
    let ns = namespace(&client, "leader").await;
    released(&client, &ns, "app", 2, "nginx:1.25").await;

    // Restore the harness's controller for the tests that follow.
    let stopped =
        signal_processes("-TERM", "triton-controller --admin-listen=127.0.0.1:8001").await;
    assert!(stopped);
    tokio::process::Command::new(&start)
        .spawn()
        .expect("restart the first controller");
    eventually(
        "a controller other than the second to lead again",
        Duration::from_secs(30),
        || async {
            match holder(&leases).await {
                Some(h) if h != "second" => Ok(()),
                other => Err(format!("holder is {other:?}")),
            }
        },
    )
    .await;
}
