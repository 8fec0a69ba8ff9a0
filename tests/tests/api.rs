//! The gRPC API against the real control plane (tests/cluster/run --triton), through the
//! harness's controller (plaintext, --insecure-anonymous): the tutorial's grpcurl calls
//! verbatim, the same release from a tonic client, every RPC's reply and error codes, Watch and
//! ListAndWatch, Scale/Restart/Rollback/Apply to Success.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DeleteParams;
use serde_json::{Value, json};
use tonic::Code;
use triton_e2e::api::*;
use triton_e2e::deployflow::{Flow, canary_waiting, flow, released, tutorial, tutorial_service};
use triton_e2e::*;

const LONG: Duration = Duration::from_secs(120);

fn last_batch(d: &pb::Deploy) -> (i32, String) {
    d.conditions
        .last()
        .map(|c| (c.batch, c.phase.clone()))
        .unwrap_or((0, String::new()))
}

/// Reads a server stream to its end (bounded in time); the messages it sent.
async fn drain<T>(mut s: tonic::Streaming<T>, what: &str, timeout: Duration) -> Vec<T> {
    let mut out = Vec::new();
    let read = async {
        while let Some(m) = s.next().await {
            out.push(m.unwrap_or_else(|e| panic!("{what}: stream error {e:?}")));
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| panic!("{what}: the stream did not end within {timeout:?}"));
    out
}

fn code_of<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let e = r.expect_err("expected an error");
    (e.code(), e.message().to_string())
}

#[tokio::test]
async fn the_tutorials_grpcurl_calls_verbatim_release_it_to_success_and_scale_deletes_the_named_pod()
 {
    let client = client().await;
    let ns = "default";
    create_service(&client, ns, tutorial_service()).await;
    let df = Flow::create(&client, ns, tutorial()).await;
    let svc = "sample-12122-svc";
    let meta = r#"{"deploy":{"name":"12122-sample-10010-df","namespace":"default"}}"#;
    let call = |rpc: &'static str| async move {
        let (ok, out, err) = grpcurl(&[
            "--plaintext",
            "-d",
            meta,
            "localhost:8099",
            &format!("deployflow.DeployFlow/{rpc}"),
        ])
        .await;
        assert!(ok, "grpcurl {rpc} failed: {err}");
        grpcurl_messages(&out)
    };

    let s = df.wait_batch(1, "Smoked", LONG).await;
    assert!(
        service_endpoints(&client, ns, svc).await.ready.is_empty(),
        "Smoked is outside the endpoints"
    );
    let canary_ip = s["conditions"][0]["pods"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();

    // Next #1: Baking, pulled in.
    let reply = call("Next").await;
    assert_eq!(reply[0]["deploy"]["name"], "12122-sample-10010-df");
    let s = df.wait_batch(1, "Baking", LONG).await;
    assert_eq!(
        s["conditions"][0]["pods"][0]["pullInStatus"],
        "PullInSucceeded"
    );
    assert_eq!(
        service_endpoints(&client, ns, svc).await.ready,
        vec![canary_ip]
    );

    // Next #2: the canary is Baked, batch 2 waits.
    call("Next").await;
    let s = df.wait_batch(2, "Pending", LONG).await;
    assert_eq!(s["conditions"][0]["phase"], "Baked");

    // Next #3: the rest, to Success.
    call("Next").await;
    df.wait_phase("Success", LONG).await;
    let got = call("Get").await;
    assert_eq!(got[0]["deploy"]["phase"], "Success");
    assert_eq!(got[0]["deploy"]["finished"], true);
    wait_ready_endpoints(&client, ns, svc, 3, LONG).await;

    // Changes on a finished release are refused with FailedPrecondition.
    let (ok, _, err) = grpcurl(&[
        "--plaintext",
        "-d",
        meta,
        "localhost:8099",
        "deployflow.DeployFlow/Cancel",
    ])
    .await;
    assert!(
        !ok && err.contains("FailedPrecondition") && err.contains("finished"),
        "{err}"
    );

    // The tutorial's Scale, with <pod-name> a pod of the release: exactly that pod goes.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let before = live_names(&pods_of(&pods, "app.kubernetes.io/instance=12122-sample-10010").await);
    assert_eq!(before.len(), 3, "{before:?}");
    let victim = before[1].clone();
    let scale = format!(
        r#"{{"instance":{{"name":"12122-sample-10010","namespace":"default"}},"replicas":2,"strategy":{{"podsToDelete":["{victim}"],"batchSize":"1","batches":"1","batchIntervalSeconds":10}}}}"#
    );
    let (ok, out, err) = grpcurl(&[
        "--plaintext",
        "-d",
        &scale,
        "localhost:8099",
        "application.Application/Scale",
    ])
    .await;
    assert!(ok, "Scale: {err}");
    let name = grpcurl_messages(&out)[0]["deployName"]
        .as_str()
        .expect("deployName")
        .to_string();
    let scale_df = Flow {
        api: df.api.clone(),
        name: name.clone(),
        ns: ns.into(),
    };
    let s = scale_df.wait_phase("Success", LONG).await;
    assert_eq!(scale_df.get().await["spec"]["action"], "scale_in");
    let after = live_names(&pods_of(&pods, "app.kubernetes.io/instance=12122-sample-10010").await);
    let expected: Vec<String> = before.iter().filter(|n| **n != victim).cloned().collect();
    assert_eq!(after, expected, "exactly {victim} deleted; status {s}");
}

async fn pods_of(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    let mut v = triton_e2e::pods(pods, selector).await;
    v.sort_by_key(|p| p.metadata.name.clone());
    v
}

#[tokio::test]
async fn a_tonic_client_drives_the_tutorial_with_watch_ending_exactly_at_each_target() {
    let client = client().await;
    let ns = namespace(&client, "api-tonic").await;
    create_service(&client, &ns, tutorial_service()).await;
    Flow::create(&client, &ns, tutorial()).await;
    let name = "12122-sample-10010-df";
    let mut dfc = DeployFlowClient::new(channel(&grpc_addr()).await);
    let watch = |stage: &str, batches: i32| pb::WatchRequest {
        deploy: meta(&ns, name),
        target: Some(pb::TargetState {
            stage: stage.into(),
            batches,
        }),
    };

    // Watch until the canary is Smoked: the last message is the first to satisfy it.
    let msgs = drain(
        dfc.watch(watch("Smoked", 1)).await.unwrap().into_inner(),
        "Watch to canary Smoked",
        LONG,
    )
    .await;
    let last = msgs
        .last()
        .and_then(|m| m.deploy.clone())
        .expect("a message");
    assert_eq!(last_batch(&last), (1, "Smoked".into()));
    for m in &msgs[..msgs.len() - 1] {
        let d = m.deploy.as_ref().unwrap();
        assert_ne!(
            last_batch(d),
            (1, "Smoked".into()),
            "the stream went on past its target"
        );
    }

    let d = dfc
        .next(pb::NextRequest {
            deploy: meta(&ns, name),
        })
        .await
        .unwrap()
        .into_inner()
        .deploy
        .unwrap();
    assert_eq!(d.name, name);
    let msgs = drain(
        dfc.watch(watch("Baking", 1)).await.unwrap().into_inner(),
        "Watch to canary Baking",
        LONG,
    )
    .await;
    let last = msgs.last().and_then(|m| m.deploy.clone()).unwrap();
    assert_eq!(last_batch(&last), (1, "Baking".into()));
    assert_eq!(last.conditions[0].pods[0].pull_in_status, "PullInSucceeded");

    dfc.next(pb::NextRequest {
        deploy: meta(&ns, name),
    })
    .await
    .unwrap();
    drain(
        dfc.watch(watch("Baked", 1)).await.unwrap().into_inner(),
        "Watch to canary Baked",
        LONG,
    )
    .await;
    // Batch 2 is prepared after the canary's bake: Next is refused until then.
    eventually("Next accepted once batch 2 is prepared", LONG, || {
        let mut dfc = dfc.clone();
        let ns = ns.clone();
        async move {
            dfc.next(pb::NextRequest {
                deploy: meta(&ns, name),
            })
            .await
            .map(|_| ())
        }
    })
    .await;
    let msgs = drain(
        dfc.watch(watch("Baked", 3)).await.unwrap().into_inner(),
        "Watch to Success",
        LONG,
    )
    .await;
    let last = msgs.last().and_then(|m| m.deploy.clone()).unwrap();
    assert_eq!(last.phase, "Success");
    assert!(last.finished);
}

/// A one-replica create, auto, run to Success.
async fn finished(client: &kube::Client, ns: &str, instance: &str) -> Flow {
    released(client, ns, instance, 1, "nginx:1.25").await
}

#[tokio::test]
async fn each_deployflow_rpc_answers_and_refuses_with_its_code() {
    let client = client().await;
    let ns = namespace(&client, "api-codes").await;
    let mut c = DeployFlowClient::new(channel(&grpc_addr()).await);
    let done = finished(&client, &ns, "codes-a").await;
    let running = canary_waiting(&client, &ns, "codes-b").await;

    // Get / NotFound / InvalidArgument naming the field.
    let d = c
        .get(pb::DeployMetaRequest {
            deploy: meta(&ns, &done.name),
        })
        .await
        .unwrap()
        .into_inner()
        .deploy
        .unwrap();
    assert_eq!(
        (d.phase.as_str(), d.finished, d.app_id, d.group_id),
        ("Success", true, 7, 8)
    );
    let (code, msg) = code_of(
        c.get(pb::DeployMetaRequest {
            deploy: meta(&ns, "nope"),
        })
        .await,
    );
    assert_eq!(code, Code::NotFound, "{msg}");
    let (code, msg) = code_of(c.get(pb::DeployMetaRequest { deploy: None }).await);
    assert_eq!(
        (code, msg.starts_with("deploy:")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let (code, msg) = code_of(
        c.next(pb::NextRequest {
            deploy: meta(&ns, ""),
        })
        .await,
    );
    assert_eq!(
        (code, msg.starts_with("deploy.name:")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let (code, msg) = code_of(
        c.r#continue(pb::ContinueRequest {
            deploy: meta(&ns, &running.name),
            target: Some(pb::TargetState {
                stage: "Cooking".into(),
                batches: 1,
            }),
        })
        .await,
    );
    assert_eq!(
        (code, msg.starts_with("target.stage:")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let (code, msg) = code_of(
        c.r#continue(pb::ContinueRequest {
            deploy: meta(&ns, &running.name),
            target: None,
        })
        .await,
    );
    assert_eq!(
        (code, msg.starts_with("target:")),
        (Code::InvalidArgument, true),
        "{msg}"
    );

    // A finished release: every change refused with FailedPrecondition; Delete allowed.
    let (code, msg) = code_of(
        c.next(pb::NextRequest {
            deploy: meta(&ns, &done.name),
        })
        .await,
    );
    assert_eq!(code, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("finished"), "{msg}");
    let (code, _) = code_of(
        c.pause(pb::DeployMetaRequest {
            deploy: meta(&ns, &done.name),
        })
        .await,
    );
    assert_eq!(code, Code::FailedPrecondition);
    // A running one cannot be deleted.
    let (code, msg) = code_of(
        c.delete(pb::DeployMetaRequest {
            deploy: meta(&ns, &running.name),
        })
        .await,
    );
    assert_eq!(code, Code::FailedPrecondition, "{msg}");

    // Next before the release reached the spec's target is refused: the canary waits at Smoked
    // and the spec asks for batch 2 Smoked, which the canary does not move toward.
    c.r#continue(pb::ContinueRequest {
        deploy: meta(&ns, &running.name),
        target: Some(pb::TargetState {
            stage: "Smoked".into(),
            batches: 2,
        }),
    })
    .await
    .unwrap();
    let (code, msg) = code_of(
        c.next(pb::NextRequest {
            deploy: meta(&ns, &running.name),
        })
        .await,
    );
    assert_eq!(code, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("not finished yet"), "{msg}");

    // Continue writes the target as given.
    let d = c
        .r#continue(pb::ContinueRequest {
            deploy: meta(&ns, &running.name),
            target: Some(pb::TargetState {
                stage: "Baking".into(),
                batches: 1,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .deploy
        .unwrap();
    assert_eq!(d.name, running.name);
    assert_eq!(
        running.get().await["spec"]["updateStrategy"]["stage"],
        "Baking"
    );

    // Pause streams until status.paused, Resume until it is cleared.
    let msgs = drain(
        c.pause(pb::DeployMetaRequest {
            deploy: meta(&ns, &running.name),
        })
        .await
        .unwrap()
        .into_inner(),
        "Pause",
        LONG,
    )
    .await;
    assert!(msgs.last().unwrap().deploy.as_ref().unwrap().paused);
    let msgs = drain(
        c.resume(pb::DeployMetaRequest {
            deploy: meta(&ns, &running.name),
        })
        .await
        .unwrap()
        .into_inner(),
        "Resume",
        LONG,
    )
    .await;
    assert!(!msgs.last().unwrap().deploy.as_ref().unwrap().paused);

    // Gets: newest first (ties by name), a default page of 10, start, and the filters. Eleven
    // more releases (of a missing application: they fail at once) make 13.
    for i in 0..11 {
        Flow::create(
            &client,
            &ns,
            flow(
                &format!("extra-{i:02}"),
                "missing",
                "restart",
                1,
                "nginx:1.25",
                json!({}),
            ),
        )
        .await;
    }
    let all = |f: pb::DeployFilter| {
        let mut c = c.clone();
        async move {
            c.gets(pb::DeploysRequest { filter: Some(f) })
                .await
                .map(|r| r.into_inner().deploys)
        }
    };
    let dfs = dynamic_api(&client, &ns, "apps.triton.io", "v1alpha1", "DeployFlow");
    let mut expected: Vec<(String, String)> = dfs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| {
            let v = serde_json::to_value(o).unwrap();
            (
                v["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                v["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let expected: Vec<String> = expected.into_iter().map(|(_, n)| n).collect();
    assert_eq!(expected.len(), 13);
    let names = |v: Vec<pb::Deploy>| v.into_iter().map(|d| d.name).collect::<Vec<_>>();
    // Gets reads the controller's cache: wait until it has seen all 13.
    eventually("the controller's cache to hold the 13 DeployFlows", Duration::from_secs(30), || async {
        let got = all(pb::DeployFilter { namespace: ns.clone(), page_size: 100, ..Default::default() })
            .await
            .map_err(|e| e.to_string())?;
        if got.len() == 13 { Ok(()) } else { Err(format!("{} seen", got.len())) }
    })
    .await;
    let first = names(
        all(pb::DeployFilter {
            namespace: ns.clone(),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    assert_eq!(first, expected[..10], "page size 0 means 10, newest first");
    let rest = names(
        all(pb::DeployFilter {
            namespace: ns.clone(),
            start: 10,
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    assert_eq!(rest, expected[10..]);
    let page = names(
        all(pb::DeployFilter {
            namespace: ns.clone(),
            start: 3,
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    assert_eq!(page, expected[3..5]);
    let only_a = names(
        all(pb::DeployFilter {
            namespace: ns.clone(),
            instance_name: "codes-a".into(),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    assert_eq!(only_a, vec![done.name.clone()]);
    let restarts = all(pb::DeployFilter {
        namespace: ns.clone(),
        action: "restart".into(),
        page_size: 100,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(restarts.len(), 11, "the action filter");
    let (code, msg) = code_of(
        all(pb::DeployFilter {
            namespace: ns.clone(),
            page_size: -1,
            ..Default::default()
        })
        .await,
    );
    assert_eq!(
        (code, msg.starts_with("filter.pageSize:")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let (code, _) = code_of(
        all(pb::DeployFilter {
            namespace: ns.clone(),
            action: "explode".into(),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(code, Code::InvalidArgument);

    // Cancel streams until the release is Canceled.
    let msgs = drain(
        c.cancel(pb::DeployMetaRequest {
            deploy: meta(&ns, &running.name),
        })
        .await
        .unwrap()
        .into_inner(),
        "Cancel",
        LONG,
    )
    .await;
    let last = msgs.last().unwrap().deploy.clone().unwrap();
    assert_eq!((last.phase.as_str(), last.finished), ("Canceled", true));

    // Delete a finished one; a missing one counts as deleted.
    c.delete(pb::DeployMetaRequest {
        deploy: meta(&ns, &done.name),
    })
    .await
    .unwrap();
    let (code, _) = code_of(
        c.get(pb::DeployMetaRequest {
            deploy: meta(&ns, &done.name),
        })
        .await,
    );
    assert_eq!(
        code,
        Code::NotFound,
        "deleted and gone from the cache when Delete returns"
    );
    c.delete(pb::DeployMetaRequest {
        deploy: meta(&ns, &done.name),
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn application_and_pod_rpcs_return_each_object_and_refuse_bad_requests() {
    let client = client().await;
    let ns = namespace(&client, "api-apps").await;
    let mut apps = ApplicationClient::new(channel(&grpc_addr()).await);
    let mut pods = PodClient::new(channel(&grpc_addr()).await);
    finished(&client, &ns, "app-one").await;
    released(&client, &ns, "app-two", 2, "nginx:1.25").await;
    let held = canary_waiting(&client, &ns, "app-held").await;

    let got = apps
        .get(app::InstanceMetaRequest {
            instance: instance(&ns, "app-two"),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(
        (got.replicas, got.app_id, got.group_id, got.image.as_str()),
        (2, 7, 8, "nginx:1.25")
    );
    let (code, _) = code_of(
        apps.get(app::InstanceMetaRequest {
            instance: instance(&ns, "nope"),
        })
        .await,
    );
    assert_eq!(code, Code::NotFound);
    let mut names: Vec<String> = apps
        .gets(app::GetsRequest {
            filter: Some(app::InstanceFilter {
                namespace: ns.clone(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .instances
        .into_iter()
        .map(|i| i.name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["app-held", "app-one", "app-two"],
        "each CloneSet once"
    );

    // Bad requests name their field; a missing application is NotFound.
    let scale =
        |name: &str, replicas: i32, strategy: Option<pb::NonUpdateStrategy>| app::ScaleRequest {
            instance: instance(&ns, name),
            replicas,
            strategy,
        };
    let s = || {
        Some(pb::NonUpdateStrategy {
            batch_size: "1".into(),
            batches: 1,
            ..Default::default()
        })
    };
    let (code, msg) = code_of(apps.scale(scale("app-two", -1, s())).await);
    assert_eq!(
        (code, msg.starts_with("replicas:")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let bad = Some(pb::NonUpdateStrategy {
        batch_size: "half".into(),
        ..Default::default()
    });
    let (code, msg) = code_of(apps.scale(scale("app-two", 1, bad)).await);
    assert_eq!(
        (code, msg.starts_with("strategy.batchSize:")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let (code, msg) = code_of(
        apps.restart(app::RestartRequest {
            instance: instance(&ns, "app-two"),
            strategy: None,
        })
        .await,
    );
    assert_eq!(
        (code, msg.starts_with("strategy:")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let (code, _) = code_of(apps.scale(scale("nope", 1, s())).await);
    assert_eq!(code, Code::NotFound);
    let (code, msg) = code_of(
        apps.scale(scale(
            "app-two",
            1,
            Some(pb::NonUpdateStrategy {
                pods_to_delete: vec!["not-a-pod".into()],
                batch_size: "1".into(),
                ..Default::default()
            }),
        ))
        .await,
    );
    assert_eq!(
        (code, msg.starts_with("strategy.podsToDelete[0]:")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let two = live_names(
        &triton_e2e::pods(
            &Api::<Pod>::namespaced(client.clone(), &ns),
            "app.kubernetes.io/instance=app-two",
        )
        .await,
    );
    let (code, msg) = code_of(
        apps.scale(scale(
            "app-two",
            3,
            Some(pb::NonUpdateStrategy {
                pods_to_delete: vec![two[0].clone()],
                batch_size: "1".into(),
                ..Default::default()
            }),
        ))
        .await,
    );
    assert_eq!(
        (code, msg.contains("scale out")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let (code, msg) = code_of(
        apps.scale(scale(
            "app-two",
            1,
            Some(pb::NonUpdateStrategy {
                pods_to_delete: two.clone(),
                batch_size: "1".into(),
                ..Default::default()
            }),
        ))
        .await,
    );
    assert_eq!(
        (code, msg.starts_with("strategy.podsToDelete:")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    // A release in progress holds its CloneSet: a new one and a Delete are refused.
    let (code, msg) = code_of(
        apps.restart(app::RestartRequest {
            instance: instance(&ns, "app-held"),
            strategy: s(),
        })
        .await,
    );
    assert_eq!(code, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains(&held.name), "{msg}");
    let (code, msg) = code_of(
        apps.delete(app::InstanceMetaRequest {
            instance: instance(&ns, "app-held"),
        })
        .await,
    );
    assert_eq!(code, Code::FailedPrecondition, "{msg}");

    // Pods: Get and Gets (of one instance, and by IP).
    let listed = pods
        .gets(podpb::GetsRequest {
            filter: Some(podpb::PodFilter {
                namespace: ns.clone(),
                instance_name: "app-two".into(),
                ip: String::new(),
            }),
            no_sort: false,
        })
        .await
        .unwrap()
        .into_inner()
        .pods;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|p| p.instance_name == "app-two" && p.image == "nginx:1.25")
    );
    let one = pods
        .get(podpb::PodMetaRequest {
            pod: Some(podpb::PodMeta {
                namespace: ns.clone(),
                name: listed[0].name.clone(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .pod
        .unwrap();
    assert_eq!(one.pod_ip, listed[0].pod_ip);
    let by_ip = pods
        .gets(podpb::GetsRequest {
            filter: Some(podpb::PodFilter {
                namespace: ns.clone(),
                instance_name: String::new(),
                ip: one.pod_ip.clone(),
            }),
            no_sort: true,
        })
        .await
        .unwrap()
        .into_inner()
        .pods;
    assert_eq!(
        by_ip.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        vec![one.name.clone()]
    );
    let (code, _) = code_of(
        pods.get(podpb::PodMetaRequest {
            pod: Some(podpb::PodMeta {
                namespace: ns.clone(),
                name: "nope".into(),
            }),
        })
        .await,
    );
    assert_eq!(code, Code::NotFound);

    // Delete of an application no release holds.
    apps.delete(app::InstanceMetaRequest {
        instance: instance(&ns, "app-one"),
    })
    .await
    .unwrap();
    eventually("CloneSet app-one gone", LONG, || {
        let mut apps = apps.clone();
        let ns = ns.clone();
        async move {
            match apps
                .get(app::InstanceMetaRequest {
                    instance: instance(&ns, "app-one"),
                })
                .await
            {
                Err(e) if e.code() == Code::NotFound => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn list_and_watch_sends_the_list_then_creations_updates_and_deletions() {
    let client = client().await;
    let ns = namespace(&client, "api-law").await;
    let first = finished(&client, &ns, "law-a").await;
    // A finished release then loses its finalizer (an update): let that happen before the
    // list, so that the only changes the stream sees are the second release's.
    first
        .wait_object("law-a without its finalizer", LONG, |o| {
            o["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())
        })
        .await;
    let mut c = DeployFlowClient::new(channel(&grpc_addr()).await);
    let mut s = c
        .list_and_watch(pb::DeploysRequest {
            filter: Some(pb::DeployFilter {
                namespace: ns.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let listed = next(&mut s).await;
    assert_eq!(
        listed.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
        vec![first.name.clone()]
    );

    // A creation, its updates up to Success, then its deletion.
    let second = Flow::create(
        &client,
        &ns,
        flow(
            "law-b-v1",
            "law-b",
            "create",
            1,
            "nginx:1.25",
            json!({"mode": "auto"}),
        ),
    )
    .await;
    let mut phases = Vec::new();
    loop {
        let d = next(&mut s).await;
        assert_eq!(d.len(), 1, "one DeployFlow per change");
        assert_eq!(d[0].name, second.name, "only changes of what changed");
        assert!(!d[0].deleted);
        phases.push(d[0].phase.clone());
        if d[0].phase == "Success" {
            break;
        }
    }
    assert_eq!(
        phases.first().map(String::as_str),
        Some(""),
        "the creation comes first: {phases:?}"
    );
    second
        .api
        .delete(&second.name, &DeleteParams::default())
        .await
        .unwrap();
    let d = loop {
        let d = next(&mut s).await;
        if d[0].deleted {
            break d;
        }
    };
    assert_eq!(d[0].name, second.name);

    drop(s);
}

#[tokio::test]
async fn apply_restart_and_rollback_to_a_named_deployflow_and_to_the_previous_revision_reach_success()
 {
    let client = client().await;
    let ns = namespace(&client, "api-rollback").await;
    let mut c = DeployFlowClient::new(channel(&grpc_addr()).await);
    let mut apps = ApplicationClient::new(channel(&grpc_addr()).await);
    let strategy = || {
        Some(pb::UpdateStrategy {
            batch_size: "1".into(),
            batches: 1,
            mode: "auto".into(),
            ..Default::default()
        })
    };
    // The original's tutorial-style DeployFlow with a fixed name, released.
    let v1 = released(&client, &ns, "rb", 2, "nginx:1.24").await;
    let image = |d: &Value| d["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    let cloneset = |client: kube::Client, ns: String| async move {
        let api = dynamic_api(&client, &ns, "apps.kruise.io", "v1alpha1", "CloneSet");
        serde_json::to_value(api.get("rb").await.unwrap()).unwrap()
    };

    // Apply (not in the original): an update from a template, to Success.
    let template = prost_types::Struct {
        fields: [(
            "spec".to_string(),
            struct_value(json!({"containers": [{"name": "main", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]})),
        )]
        .into(),
    };
    let (code, msg) = code_of(
        c.apply(pb::CreateRequest {
            namespace: ns.clone(),
            application_spec: None,
            ..Default::default()
        })
        .await,
    );
    assert_eq!(
        (code, msg.starts_with("applicationSpec:")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let d = c
        .apply(pb::CreateRequest {
            namespace: ns.clone(),
            application_spec: Some(pb::ApplicationSpec {
                app_id: 7,
                group_id: 8,
                app_name: "rb".into(),
                instance_name: "rb".into(),
                replicas: Some(2),
                template: Some(template),
                ..Default::default()
            }),
            strategy: strategy(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("Apply: {e:?}"))
        .into_inner()
        .deploy
        .unwrap();
    assert_eq!(d.action, "update");
    let update = Flow {
        api: v1.api.clone(),
        name: d.name.clone(),
        ns: ns.clone(),
    };
    update.wait_phase("Success", LONG).await;
    assert_eq!(
        image(&cloneset(client.clone(), ns.clone()).await),
        "nginx:1.25"
    );

    // Rollback without deployName: the CloneSet's previous revision (nginx:1.24).
    let r = apps
        .rollback(app::RollbackRequest {
            instance: instance(&ns, "rb"),
            deploy_name: String::new(),
            strategy: strategy(),
        })
        .await
        .unwrap_or_else(|e| panic!("Rollback to the previous revision: {e:?}"))
        .into_inner();
    assert!(
        r.rollback_to.starts_with("rb-") && r.rollback_to != r.deploy_name,
        "rollbackTo names the CloneSet's previous revision: {r:?}"
    );
    let back = Flow {
        api: v1.api.clone(),
        name: r.deploy_name.clone(),
        ns: ns.clone(),
    };
    back.wait_phase("Success", LONG).await;
    assert_eq!(back.get().await["spec"]["action"], "rollback");
    assert_eq!(
        image(&cloneset(client.clone(), ns.clone()).await),
        "nginx:1.24"
    );

    // Rollback to the named Apply release (nginx:1.25); the original failed for fixed names.
    let r = apps
        .rollback(app::RollbackRequest {
            instance: instance(&ns, "rb"),
            deploy_name: update.name.clone(),
            strategy: strategy(),
        })
        .await
        .unwrap_or_else(|e| panic!("Rollback to {}: {e:?}", update.name))
        .into_inner();
    assert_eq!(r.rollback_to, update.name);
    Flow {
        api: v1.api.clone(),
        name: r.deploy_name.clone(),
        ns: ns.clone(),
    }
    .wait_phase("Success", LONG)
    .await;
    assert_eq!(
        image(&cloneset(client.clone(), ns.clone()).await),
        "nginx:1.25"
    );
    // And to the fixed-name create.
    let r = apps
        .rollback(app::RollbackRequest {
            instance: instance(&ns, "rb"),
            deploy_name: v1.name.clone(),
            strategy: strategy(),
        })
        .await
        .unwrap_or_else(|e| panic!("Rollback to {}: {e:?}", v1.name))
        .into_inner();
    Flow {
        api: v1.api.clone(),
        name: r.deploy_name.clone(),
        ns: ns.clone(),
    }
    .wait_phase("Success", LONG)
    .await;
    assert_eq!(
        image(&cloneset(client.clone(), ns.clone()).await),
        "nginx:1.24"
    );

    // Restart re-creates every pod, to Success.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let before = live_names(&pods_of(&pods, "app.kubernetes.io/instance=rb").await);
    let r = apps
        .restart(app::RestartRequest {
            instance: instance(&ns, "rb"),
            strategy: Some(pb::NonUpdateStrategy {
                batch_size: "1".into(),
                batches: 2,
                mode: "auto".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("Restart: {e:?}"))
        .into_inner();
    Flow {
        api: v1.api.clone(),
        name: r.deploy_name.clone(),
        ns: ns.clone(),
    }
    .wait_phase("Success", LONG)
    .await;
    let after = live_names(&pods_of(&pods, "app.kubernetes.io/instance=rb").await);
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "every pod re-created: {before:?} → {after:?}"
    );
}

#[tokio::test]
async fn resume_of_a_failed_batch_whose_pods_still_fail_ends_its_stream_with_the_refusal() {
    let client = client().await;
    let ns = namespace(&client, "api-resume").await;
    let mut m = flow(
        "crash-v1",
        "crash",
        "create",
        1,
        "nginx:1.25",
        json!({"mode": "auto"}),
    );
    m["spec"]["application"]["template"]["metadata"]["annotations"] =
        json!({"e2e.triton.io/crash": "true"});
    let df = Flow::create(&client, &ns, m).await;
    df.wait_batch(1, "SmokeFailed", LONG).await;
    df.wait_object("status.paused after SmokeFailed", LONG, |o| {
        o["status"]["paused"] == true
    })
    .await;
    let mut c = DeployFlowClient::new(channel(&grpc_addr()).await);
    let mut s = c
        .resume(pb::DeployMetaRequest {
            deploy: meta(&ns, &df.name),
        })
        .await
        .unwrap()
        .into_inner();
    let err = tokio::time::timeout(LONG, async {
        loop {
            match s.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return e,
                None => panic!("the Resume stream ended without the refusal"),
            }
        }
    })
    .await
    .expect("the refusal within the timeout");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().starts_with("resume refused"), "{err:?}");
}

/// The next ListAndWatch message (bounded in time).
async fn next(s: &mut tonic::Streaming<pb::DeploysReply>) -> Vec<pb::Deploy> {
    tokio::time::timeout(LONG, s.next())
        .await
        .expect("a ListAndWatch message in time")
        .expect("the stream is open")
        .expect("no stream error")
        .deploys
}

fn struct_value(v: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    prost_types::Value {
        kind: Some(match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
            Value::String(s) => Kind::StringValue(s),
            Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.into_iter().map(struct_value).collect(),
            }),
            Value::Object(o) => Kind::StructValue(prost_types::Struct {
                fields: o.into_iter().map(|(k, v)| (k, struct_value(v))).collect(),
            }),
        }),
    }
}
