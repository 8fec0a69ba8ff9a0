//! Cache indexes: the names of cached objects by namespace and application instance, so a
//! reconcile, and the mapping of a watch event to the DeployFlows it concerns, read the few
//! objects of one application instead of scanning every object in the cache (which made each
//! event cost O(cluster), and a thousand releases cost O(N²)).
//!
//! An index is fed by the same watch event that updates its store, after the store: a reader
//! may briefly find a name whose object is gone (skipped) or miss one that just arrived (its
//! own event triggers the reconcile that needs it).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use kube::runtime::reflector::{ObjectRef, Store};

/// Names by namespace and instance (`None`: the object names no instance).
#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    by: HashMap<String, HashMap<Option<String>, BTreeSet<String>>>,
    /// Where each object is filed, to move it when its instance changes.
    of: HashMap<(String, String), Option<String>>,
}

impl Index {
    /// Files (or, when `deleted`, removes) the object `ns/name` of `instance`.
    pub fn update(&self, ns: &str, name: &str, instance: Option<String>, deleted: bool) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let key = (ns.to_string(), name.to_string());
        if let Some(old) = inner.of.remove(&key)
            && let Some(instances) = inner.by.get_mut(ns)
        {
            if let Some(names) = instances.get_mut(&old) {
                names.remove(name);
                if names.is_empty() {
                    instances.remove(&old);
                }
            }
            if instances.is_empty() {
                inner.by.remove(ns);
            }
        }
        if !deleted {
            inner
                .by
                .entry(ns.to_string())
                .or_default()
                .entry(instance.clone())
                .or_default()
                .insert(name.to_string());
            inner.of.insert(key, instance);
        }
    }

    /// The names of `instance`'s objects in `ns`.
    pub fn of(&self, ns: &str, instance: &str) -> Vec<String> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .by
            .get(ns)
            .and_then(|i| i.get(&Some(instance.to_string())))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The names of the objects in `ns` filed under exactly `instance` (`None`: those that
    /// name none).
    pub fn filed(&self, ns: &str, instance: Option<&str>) -> Vec<String> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .by
            .get(ns)
            .and_then(|i| i.get(&instance.map(str::to_string)))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The names of every object in `ns`.
    pub fn in_namespace(&self, ns: &str) -> Vec<String> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .by
            .get(ns)
            .map(|i| i.values().flatten().cloned().collect())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .of
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The cached objects of `names` in `ns` (those still in the store).
pub fn objects<K>(store: &Store<K>, ns: &str, names: Vec<String>) -> Vec<Arc<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    names
        .into_iter()
        .filter_map(|n| store.get(&ObjectRef::new(&n).within(ns)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn objects_are_found_by_namespace_and_instance_and_moved_or_removed() {
        let i = Index::default();
        i.update("a", "p1", some("web"), false);
        i.update("a", "p2", some("web"), false);
        i.update("a", "p3", some("db"), false);
        i.update("b", "p1", some("web"), false);
        i.update("a", "x", None, false);
        assert_eq!(i.of("a", "web"), ["p1", "p2"]);
        assert_eq!(i.of("b", "web"), ["p1"]);
        assert_eq!(i.of("c", "web"), Vec::<String>::new());
        assert_eq!(i.filed("a", None), ["x"]);
        assert_eq!(i.filed("a", Some("db")), ["p3"]);
        let mut all = i.in_namespace("a");
        all.sort();
        assert_eq!(all, ["p1", "p2", "p3", "x"]);
        // A label change moves the object; an update with the same instance is idempotent.
        i.update("a", "p2", some("db"), false);
        i.update("a", "p2", some("db"), false);
        assert_eq!(i.of("a", "web"), ["p1"]);
        assert_eq!(i.of("a", "db"), ["p2", "p3"]);
        // Deletion, also of an object never filed.
        i.update("a", "p1", some("web"), true);
        i.update("a", "nope", some("web"), true);
        assert!(i.of("a", "web").is_empty());
        assert_eq!(i.len(), 4);
        for (ns, n) in [("a", "p2"), ("a", "p3"), ("a", "x"), ("b", "p1")] {
            i.update(ns, n, None, true);
        }
        assert!(i.is_empty());
        assert!(
            i.inner.read().unwrap().by.is_empty(),
            "empty namespaces are dropped"
        );
    }
}
