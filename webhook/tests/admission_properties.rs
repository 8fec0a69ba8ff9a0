//! Property tests: whatever bytes or JSON arrive, the handler answers without panicking, with a
//! 200 or a 4xx and a well-formed AdmissionReview; and for well-formed reviews of managed pods,
//! applying the patch twice (reinvocation) adds nothing the second time.

use proptest::prelude::*;
use serde_json::{Value, json};
use triton_webhook::admission::{Outcome, review};
use triton_webhook::mutate::AgentSettings;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        prop_oneof![
            Just("CREATE"),
            Just("Pod"),
            Just("v1"),
            Just("managed-by"),
            Just("triton-io"),
            Just("apps.kruise.io/v1alpha1"),
            Just("CloneSet")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    ".{0,8}".boxed(),
                    Just("metadata".to_string()).boxed(),
                    Just("spec".to_string()).boxed(),
                    Just("labels".to_string()).boxed()
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_review() -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "kruise"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "web-", "labels": {"managed-by": "triton-io", "app": "web"},
                    "annotations": {"apps.triton.io/agent": "http://:8080/healthz"},
                    "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "web", "uid": "u", "controller": true}]},
                "spec": {"containers": [{"name": "app", "image": "nginx"}], "readinessGates": [{"conditionType": "InPlaceUpdateReady"}]}
            }
        }
    })
}

/// All JSON pointers into a document.
fn pointers(v: &Value, prefix: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, c)| {
            let p = format!("{prefix}/{}", k.replace('~', "~0").replace('/', "~1"));
            out.push(p.clone());
            pointers(c, p, out);
        }),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| {
            let p = format!("{prefix}/{i}");
            out.push(p.clone());
            pointers(c, p, out);
        }),
        _ => {}
    }
}

/// With the agent enabled and without it (the default).
fn assert_well_formed(body: &[u8]) {
    assert_well_formed_with(body, Some(&AgentSettings::default()));
    assert_well_formed_with(body, None);
}

fn assert_well_formed_with(body: &[u8], agent: Option<&AgentSettings>) {
    let answer = review(body, agent);
    assert!(
        answer.status == 200 || (400..500).contains(&answer.status),
        "status {}",
        answer.status
    );
    let v: Value = serde_json::from_slice(&answer.body).expect("the answer is JSON");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert!(
        v["response"]["allowed"].is_boolean(),
        "response.allowed is a bool: {v}"
    );
    if answer.status != 200 {
        assert_eq!(answer.outcome, Outcome::Invalid);
        assert_eq!(v["response"]["allowed"], false);
    }
    if v["response"]["allowed"] == false {
        let msg = v["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(!msg.is_empty(), "a refusal says why: {v}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_get_a_well_formed_answer(body in prop::collection::vec(any::<u8>(), 0..512)) {
        assert_well_formed(&body);
    }

    #[test]
    fn arbitrary_json_gets_a_well_formed_answer(doc in arb_json()) {
        assert_well_formed(&serde_json::to_vec(&doc).unwrap());
    }

    #[test]
    fn a_review_with_any_field_replaced_gets_a_well_formed_answer(pick in any::<prop::sample::Index>(), value in arb_json()) {
        let mut doc = valid_review();
        let mut ps = Vec::new();
        pointers(&doc, String::new(), &mut ps);
        let target = pick.get(&ps).clone();
        *doc.pointer_mut(&target).unwrap() = value;
        assert_well_formed(&serde_json::to_vec(&doc).unwrap());
    }

    #[test]
    fn a_review_with_any_field_removed_gets_a_well_formed_answer(pick in any::<prop::sample::Index>()) {
        let mut doc = valid_review();
        let mut ps = Vec::new();
        pointers(&doc, String::new(), &mut ps);
        let target = pick.get(&ps).clone();
        let (parent, key) = target.rsplit_once('/').unwrap();
        match doc.pointer_mut(parent).unwrap() {
            Value::Object(m) => { m.remove(&key.replace("~1", "/").replace("~0", "~")); }
            Value::Array(a) => { a.remove(key.parse::<usize>().unwrap()); }
            _ => unreachable!(),
        }
        assert_well_formed(&serde_json::to_vec(&doc).unwrap());
    }
}

#[test]
fn the_valid_review_is_patched_and_its_patch_is_idempotent() {
    let agent = Some(AgentSettings::default());
    let doc = valid_review();
    let answer = review(&serde_json::to_vec(&doc).unwrap(), agent.as_ref());
    assert_eq!(answer.outcome, Outcome::Patched);
    let v: Value = serde_json::from_slice(&answer.body).unwrap();
    let bytes: Vec<u8> = serde_json::from_value(v["response"]["patch"].clone()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut pod = doc["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();

    let mut again = doc.clone();
    again["request"]["object"] = pod;
    let answer = review(&serde_json::to_vec(&again).unwrap(), agent.as_ref());
    assert_eq!(
        answer.outcome,
        Outcome::Allowed,
        "reinvocation on the patched pod adds nothing"
    );
}

#[test]
fn the_valid_review_asking_for_the_agent_is_denied_when_the_agent_is_disabled() {
    let answer = review(&serde_json::to_vec(&valid_review()).unwrap(), None);
    assert_eq!(answer.outcome, Outcome::Denied);
    let v: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(v["response"]["allowed"], false);
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("does not inject (--enable-agent=false)"),
        "{v}"
    );
}
