//! The CRD YAML checked in under `crds/`, generated from the Rust types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use kube::CustomResourceExt;

use crate::crd::DeployFlow;

/// The command that regenerates `crds/deployflows.yaml`.
pub const REGENERATE: &str = "cargo run -p triton-controller --bin crdgen > crds/deployflows.yaml && cp crds/deployflows.yaml deploy/helm/triton/files/";

/// The phases in which a release runs (`spec.action` and `spec.application` are then fixed).
const RUNNING_PHASES: &str = "['Pending', 'Initializing', 'BatchStarted', 'BatchFinished']";

/// The DeployFlow CRD: the derived schema plus a transition rule on the whole object, which is
/// the only place where a rule can see both the spec and the status (a running release's action
/// and application cannot change under it).
pub fn crd() -> CustomResourceDefinition {
    let mut crd = DeployFlow::crd();
    let rule = format!(
        "!has(oldSelf.status) || !has(oldSelf.status.phase) || !(oldSelf.status.phase in {RUNNING_PHASES}) || \
         (self.spec.action == oldSelf.spec.action && self.spec.application == oldSelf.spec.application)"
    );
    for v in crd.spec.versions.iter_mut() {
        if let Some(schema) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            schema.x_kubernetes_validations = Some(vec![ValidationRule {
                rule: rule.clone(),
                message: Some(
                    "spec.action and spec.application cannot change while the release runs; \
                     cancel it (or let it finish), then create a new DeployFlow"
                        .into(),
                ),
                ..Default::default()
            }]);
        }
    }
    strip_template_descriptions(crd)
}

/// The pod template's schema comes from Kubernetes with every field's description, which makes
/// the CRD over 500 KB: too big for the `last-applied-configuration` annotation of a client-side
/// `kubectl apply` (256 KB). Those descriptions are `kubectl explain pod.spec`'s; they go (as
/// controller-gen's `maxDescLen=0` would do); the DeployFlow's own fields keep theirs.
fn strip_template_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("description");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(&crd).expect("the CRD serializes");
    for version in v["spec"]["versions"].as_array_mut().into_iter().flatten() {
        let template = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["application"]["properties"]["template"];
        let own = template.get("description").cloned();
        strip(template);
        if let (Some(own), Some(m)) = (own, template.as_object_mut()) {
            m.insert("description".into(), own);
        }
    }
    serde_json::from_value(v).expect("the CRD deserializes")
}

pub fn crd_yaml() -> String {
    format!(
        "# Generated from controller/src/crd.rs by `{REGENERATE}`; do not edit.\n{}",
        serde_yaml::to_string(&crd()).expect("the CRD serializes")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crd_is_current() {
        // crds/ (kustomize) and the Helm chart's copy (a chart reads no file outside itself).
        for file in ["crds/deployflows.yaml", "deploy/helm/triton/files/deployflows.yaml"] {
            let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
            let on_disk = std::fs::read_to_string(path).unwrap_or_default();
            assert!(
                on_disk == crd_yaml(),
                "{file} is stale; regenerate it with:\n    {REGENERATE}"
            );
        }
    }

    #[test]
    fn the_crd_fits_a_client_side_apply() {
        let json = serde_json::to_string(&crd()).unwrap();
        assert!(
            json.len() < 200_000,
            "the CRD is {} bytes: `kubectl apply` stores it in a 256 KB annotation",
            json.len()
        );
    }

    #[test]
    fn crd_names_and_columns_match_the_original() {
        let crd = DeployFlow::crd();
        assert_eq!(crd.spec.group, "apps.triton.io");
        assert_eq!(crd.spec.names.plural, "deployflows");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["df".to_string()][..])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "REPLICAS",
                "UPDATED_READY_REPLICAS",
                "FINISHED_REPLICAS",
                "PHASE",
                "BATCHES",
                "CURRENT_BATCH_SIZE",
                "AGE",
                "UPDATE_AT",
                "PODS"
            ]
        );
    }

    #[test]
    fn tutorial_deployflow_parses() {
        let text = include_str!("../../examples/nginx-deployflow.yaml");
        let df: DeployFlow = serde_yaml::from_str(text).unwrap();
        assert_eq!(df.spec.application.replicas, 3);
        assert!(df.spec.auto());
        assert_eq!(df.spec.canary(), 1);
        assert_eq!(df.spec.base().batches, 1, "the CRD default");
    }
}
