//! The CRD YAML checked in under `crds/`, generated from the Rust types.

use kube::CustomResourceExt;

use crate::crd::DeployFlow;

/// The command that regenerates `crds/deployflows.yaml`.
pub const REGENERATE: &str = "cargo run -p triton-controller --bin crdgen > crds/deployflows.yaml";

pub fn crd_yaml() -> String {
    format!(
        "# Generated from controller/src/crd.rs by `{REGENERATE}`; do not edit.\n{}",
        serde_yaml::to_string(&DeployFlow::crd()).expect("the CRD serializes")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crd_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/deployflows.yaml");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == crd_yaml(),
            "crds/deployflows.yaml is stale; regenerate it with:\n    {REGENERATE}"
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
