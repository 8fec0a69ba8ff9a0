//! Untyped views of the custom resources the controller watches: their metadata is read, the
//! rest is kept as JSON. A DeployFlow the Rust types cannot read is then one object to report,
//! not a list that fails to decode (which stops the watch of every DeployFlow); a CloneSet is
//! read through `observe::CloneSetView`. Static resource types (unlike `DynamicObject`) so that
//! their reflectors can be shared between controllers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

macro_rules! untyped_resource {
    ($(#[$doc:meta])* $name:ident, $group:literal, $version:literal, $kind:literal, $plural:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, Serialize, Deserialize)]
        pub struct $name {
            pub metadata: ObjectMeta,
            /// Everything else: apiVersion, kind, spec, status.
            #[serde(flatten)]
            pub data: Value,
        }

        impl k8s_openapi::Resource for $name {
            const API_VERSION: &'static str = concat!($group, "/", $version);
            const GROUP: &'static str = $group;
            const KIND: &'static str = $kind;
            const VERSION: &'static str = $version;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::Metadata for $name {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

untyped_resource!(
    /// A DeployFlow as stored (`apps.triton.io/v1alpha1`), decoded on use.
    RawDeployFlow, "apps.triton.io", "v1alpha1", "DeployFlow", "deployflows"
);
untyped_resource!(
    /// An OpenKruise CloneSet, addressed as `apps.kruise.io/v1alpha1`.
    RawCloneSet, "apps.kruise.io", "v1alpha1", "CloneSet", "clonesets"
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn untyped_objects_keep_everything_and_name_their_resource() {
        let v = json!({"apiVersion": "apps.triton.io/v1alpha1", "kind": "DeployFlow",
            "metadata": {"name": "a", "namespace": "ns"}, "spec": {"anything": [1, "x"]}});
        let raw: RawDeployFlow = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(raw.metadata.name.as_deref(), Some("a"));
        assert_eq!(serde_json::to_value(&raw).unwrap(), v);
        use kube::Resource;
        assert_eq!(RawCloneSet::plural(&()), "clonesets");
        assert_eq!(RawDeployFlow::api_version(&()), "apps.triton.io/v1alpha1");
    }
}
