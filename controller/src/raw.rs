//! Untyped views of the custom resources the controller watches: their metadata is read, the
//! rest is kept as JSON. A DeployFlow the Rust types cannot read is then one object to report,
//! not a list that fails to decode (which stops the watch of every DeployFlow); a CloneSet is
//! read through `observe::CloneSetView`. Static resource types (unlike `DynamicObject`) so that
//! their reflectors can be shared between controllers.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// ObjectMeta without `managedFields`, which nothing here reads: skipped while parsing (serde
/// passes over an unknown field without building it), where dropping it after the parse still
/// paid for every allocation of its `fieldsV1` trees.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaWithoutManagedFields {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

impl From<MetaWithoutManagedFields> for ObjectMeta {
    fn from(m: MetaWithoutManagedFields) -> Self {
        ObjectMeta {
            annotations: m.annotations,
            creation_timestamp: m.creation_timestamp,
            deletion_grace_period_seconds: m.deletion_grace_period_seconds,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers,
            generate_name: m.generate_name,
            generation: m.generation,
            labels: m.labels,
            managed_fields: None,
            name: m.name,
            namespace: m.namespace,
            owner_references: m.owner_references,
            resource_version: m.resource_version,
            self_link: m.self_link,
            uid: m.uid,
        }
    }
}

/// Reads an object's fields in one pass: `metadata` typed, the rest as JSON. (serde's `flatten`
/// buffered the whole object first and read it twice.)
struct Untyped;

impl<'de> Visitor<'de> for Untyped {
    type Value = (ObjectMeta, Value);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut metadata = None;
        let mut rest = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "metadata" {
                metadata = Some(map.next_value::<MetaWithoutManagedFields>()?.into());
            } else {
                rest.insert(key, map.next_value()?);
            }
        }
        Ok((metadata.unwrap_or_default(), Value::Object(rest)))
    }
}

macro_rules! untyped_resource {
    ($(#[$doc:meta])* $name:ident, $group:literal, $version:literal, $kind:literal, $plural:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, Serialize)]
        pub struct $name {
            pub metadata: ObjectMeta,
            /// Everything else: apiVersion, kind, spec, status.
            #[serde(flatten)]
            pub data: Value,
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let (metadata, data) = d.deserialize_map(Untyped)?;
                Ok($name { metadata, data })
            }
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

    #[test]
    fn metadata_is_read_whole_but_for_managed_fields() {
        let meta = json!({"name": "a", "namespace": "ns", "uid": "u", "resourceVersion": "7",
            "generation": 3, "generateName": "a-", "selfLink": "/x",
            "labels": {"l": "1"}, "annotations": {"a": "2"}, "finalizers": ["f"],
            "creationTimestamp": "2026-11-29T10:00:00Z", "deletionTimestamp": "2026-11-29T10:01:00Z",
            "deletionGracePeriodSeconds": 30,
            "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "ou", "controller": true}]});
        let mut with_managed = meta.clone();
        with_managed["managedFields"] = json!([{"manager": "m", "operation": "Update",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:x": {}}}}]);
        let raw: RawCloneSet = serde_json::from_value(
            json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "metadata": with_managed, "spec": {}}),
        )
        .unwrap();
        let whole: ObjectMeta = serde_json::from_value(meta).unwrap();
        assert_eq!(raw.metadata, whole, "every field but managedFields");
        assert!(raw.data.get("metadata").is_none());
        // From text too (the watch's path), and a body with no metadata.
        let raw: RawDeployFlow = serde_json::from_str(r#"{"kind":"DeployFlow","status":{"phase":"Success"}}"#).unwrap();
        assert_eq!(raw.metadata, ObjectMeta::default());
        assert_eq!(raw.data["status"]["phase"], "Success");
    }
}
