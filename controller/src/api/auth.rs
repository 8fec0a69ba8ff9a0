//! Who calls, and may they: the caller's bearer token is checked with a TokenReview and each
//! call authorized with SubjectAccessReviews against the objects it touches, by the one table
//! [`PERMISSIONS`]. Both answers are cached for a short TTL, so a busy client costs the API
//! server nothing per call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};

use super::{ApiError, Result};

/// One permission a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
}

const fn df(verb: &'static str) -> Need {
    Need {
        verb,
        group: "apps.triton.io",
        resource: "deployflows",
    }
}
const fn cs(verb: &'static str) -> Need {
    Need {
        verb,
        group: "apps.kruise.io",
        resource: "clonesets",
    }
}
const fn pods(verb: &'static str) -> Need {
    Need {
        verb,
        group: "",
        resource: "pods",
    }
}

/// What each call needs, in the namespace it names (and on the object it names, where it names
/// one). REST routes are authorized as the gRPC method they map to. The README prints this
/// table; a test checks that every method of the services is in it.
pub const PERMISSIONS: &[(&str, &[Need])] = &[
    ("deployflow.DeployFlow/Get", &[df("get")]),
    ("deployflow.DeployFlow/Gets", &[df("list")]),
    ("deployflow.DeployFlow/Watch", &[df("get"), df("watch")]),
    (
        "deployflow.DeployFlow/ListAndWatch",
        &[df("list"), df("watch")],
    ),
    ("deployflow.DeployFlow/Next", &[df("patch")]),
    ("deployflow.DeployFlow/Continue", &[df("patch")]),
    ("deployflow.DeployFlow/Pause", &[df("patch")]),
    ("deployflow.DeployFlow/Resume", &[df("patch")]),
    ("deployflow.DeployFlow/Cancel", &[df("patch")]),
    ("deployflow.DeployFlow/Delete", &[df("delete")]),
    ("deployflow.DeployFlow/Apply", &[df("create"), cs("get")]),
    ("application.Application/Get", &[cs("get")]),
    ("application.Application/Gets", &[cs("list")]),
    (
        "application.Application/Restart",
        &[df("create"), cs("get")],
    ),
    ("application.Application/Scale", &[df("create"), cs("get")]),
    (
        "application.Application/Rollback",
        &[df("create"), df("get"), cs("get")],
    ),
    ("application.Application/Delete", &[cs("delete")]),
    ("pod.Pod/Get", &[pods("get")]),
    ("pod.Pod/Gets", &[pods("list")]),
];

/// The permissions of a method (`package.Service/Method`).
pub fn needs(method: &str) -> Option<&'static [Need]> {
    PERMISSIONS
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, n)| *n)
}

/// The objects a call names, by kind: each permission is checked against the object of its
/// resource (none for `create` and for lists).
#[derive(Clone, Copy, Debug, Default)]
pub struct Target<'a> {
    pub deployflow: Option<&'a str>,
    pub cloneset: Option<&'a str>,
    pub pod: Option<&'a str>,
}

impl<'a> Target<'a> {
    pub fn deployflow(name: &'a str) -> Self {
        Target {
            deployflow: Some(name),
            ..Default::default()
        }
    }
    pub fn cloneset(name: &'a str) -> Self {
        Target {
            cloneset: Some(name),
            ..Default::default()
        }
    }
    pub fn pod(name: &'a str) -> Self {
        Target {
            pod: Some(name),
            ..Default::default()
        }
    }
    /// The object `need` is checked against.
    pub fn name_for(&self, need: &Need) -> Option<&'a str> {
        if need.verb == "create" || need.verb == "list" {
            return None;
        }
        match need.resource {
            "deployflows" => self.deployflow,
            "clonesets" => self.cloneset,
            "pods" => self.pod,
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

/// A cached access review: allowed, or why not; and when it was made.
type Decision = (std::result::Result<(), String>, Instant);
/// A cached token review: the caller, or why the token is refused; and when it was made.
type Identity = (std::result::Result<Caller, String>, Instant);

/// Checks tokens and permissions against the API server, with short-lived caches keyed by
/// SHA-256 digests (a cache entry is small whatever the caller sent).
pub struct Authorizer {
    client: Client,
    ttl: Duration,
    audiences: Vec<String>,
    tokens: Mutex<HashMap<Digest, Identity>>,
    decisions: Mutex<HashMap<Digest, Decision>>,
    /// Reviews in flight: the API server's budget is shared with the release engine.
    reviews: tokio::sync::Semaphore,
}

/// A SHA-256 digest, the key of the token caches (here and in the agent service).
pub type Digest = [u8; 32];

pub fn digest(parts: &[&[u8]]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        // Length-prefixed, so no two different part lists hash the same bytes.
        ctx.update(&(p.len() as u64).to_le_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Entries kept per cache; at the bound, expired entries go first, then all (refills cost one
/// review each).
const CACHE_BOUND: usize = 10_000;
/// Reviews sent to the API server at once.
const MAX_REVIEWS_IN_FLIGHT: usize = 64;
/// Longer bearer tokens are refused unread (ServiceAccount tokens are ~1 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

fn insert_bounded<V>(map: &mut HashMap<Digest, (V, Instant)>, key: Digest, v: V, ttl: Duration) {
    if map.len() >= CACHE_BOUND {
        map.retain(|_, (_, at)| at.elapsed() < ttl);
        if map.len() >= CACHE_BOUND {
            map.clear();
        }
    }
    map.insert(key, (v, Instant::now()));
}

impl Authorizer {
    /// `audiences` empty: the API server's own (a ServiceAccount token from `kubectl create
    /// token`); a token made for another audience is refused.
    pub fn new(client: Client, ttl: Duration, audiences: Vec<String>) -> Self {
        Authorizer {
            client,
            ttl,
            audiences,
            tokens: Mutex::default(),
            decisions: Mutex::default(),
            reviews: tokio::sync::Semaphore::new(MAX_REVIEWS_IN_FLIGHT),
        }
    }

    /// Authenticates `authorization: Bearer <token>` and authorizes `method` on the namespace
    /// and the objects it names.
    pub async fn check(
        &self,
        bearer: Option<&str>,
        method: &str,
        namespace: &str,
        target: Target<'_>,
    ) -> Result<Caller> {
        let token = bearer
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthenticated(
                    "no bearer token: send `authorization: Bearer <Kubernetes token>`".into(),
                )
            })?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ApiError::Unauthenticated(format!(
                "the bearer token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        // What the caller names is validated before anything is reviewed or cached.
        triton_core::api::namespace("namespace", namespace, true)?;
        for (field, name) in [
            ("deployflow", target.deployflow),
            ("cloneset", target.cloneset),
            ("pod", target.pod),
        ] {
            if let Some(n) = name {
                triton_core::api::object_name(field, n)?;
            }
        }
        let caller = self.authenticate(token).await?;
        let needs = needs(method).ok_or_else(|| {
            ApiError::Forbidden(format!("{method} is not in the permission table"))
        })?;
        for need in needs {
            self.authorize(&caller, need, namespace, target.name_for(need))
                .await?;
        }
        Ok(caller)
    }

    async fn authenticate(&self, token: &str) -> Result<Caller> {
        let key = digest(&[token.as_bytes()]);
        if let Some((r, at)) = self.tokens.lock().expect("lock").get(&key)
            && at.elapsed() < self.ttl
        {
            return r.clone().map_err(ApiError::Unauthenticated);
        }
        let _slot = self.reviews.acquire().await.expect("never closed");
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ApiError::kube("reviewing the bearer token", e))?;
        let status = reviewed.status.unwrap_or_default();
        // With audiences asked for, the API server must confirm one of them (an authenticator
        // that ignores audiences would otherwise pass any token).
        let audience_ok = self.audiences.is_empty()
            || status
                .audiences
                .iter()
                .flatten()
                .any(|a| self.audiences.contains(a));
        let result = match (status.authenticated, status.user) {
            (Some(true), Some(_)) if !audience_ok => Err(format!(
                "the bearer token is not for the audience {}",
                self.audiences.join(" or ")
            )),
            (Some(true), Some(u)) => Ok(Caller {
                user: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default(),
            }),
            _ => Err(format!(
                "the bearer token is not valid{}",
                status.error.map(|e| format!(": {e}")).unwrap_or_default()
            )),
        };
        insert_bounded(
            &mut self.tokens.lock().expect("lock"),
            key,
            result.clone(),
            self.ttl,
        );
        result.map_err(ApiError::Unauthenticated)
    }

    async fn authorize(
        &self,
        caller: &Caller,
        need: &Need,
        namespace: &str,
        name: Option<&str>,
    ) -> Result<()> {
        let extra = serde_json::to_vec(&caller.extra).unwrap_or_default();
        let mut parts: Vec<&[u8]> = vec![
            caller.user.as_bytes(),
            caller.uid.as_bytes(),
            &extra,
            need.verb.as_bytes(),
            need.group.as_bytes(),
            need.resource.as_bytes(),
            namespace.as_bytes(),
            name.unwrap_or("").as_bytes(),
        ];
        parts.extend(caller.groups.iter().map(|g| g.as_bytes()));
        let key = digest(&parts);
        if let Some((r, at)) = self.decisions.lock().expect("lock").get(&key)
            && at.elapsed() < self.ttl
        {
            return r.clone().map_err(ApiError::Forbidden);
        }
        let _slot = self.reviews.acquire().await.expect("never closed");
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.user.clone()),
                uid: Some(caller.uid.clone()),
                groups: Some(caller.groups.clone()),
                extra: Some(caller.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(need.verb.into()),
                    group: Some(need.group.into()),
                    resource: Some(need.resource.into()),
                    namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                    name: name.map(String::from),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ApiError::kube("reviewing the caller's access", e))?;
        let status = reviewed.status.unwrap_or_default();
        let result = if status.allowed {
            Ok(())
        } else {
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in namespace {namespace}")
            };
            let what = if need.group.is_empty() {
                need.resource.to_string()
            } else {
                format!("{}.{}", need.resource, need.group)
            };
            Err(format!(
                "{} may not {} {what} {scope}{}",
                caller.user,
                need.verb,
                status
                    .reason
                    .filter(|r| !r.is_empty())
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ))
        };
        insert_bounded(
            &mut self.decisions.lock().expect("lock"),
            key,
            result.clone(),
            self.ttl,
        );
        result.map_err(ApiError::Forbidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn every_method_of_every_service_has_its_permissions() {
        let fds = prost_types::FileDescriptorSet::decode(triton_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let mut methods = Vec::new();
        // The agent service authenticates pods, not API callers (see the agent module).
        for file in fds.file.iter().filter(|f| f.package() != "agent") {
            for svc in &file.service {
                for m in &svc.method {
                    methods.push(format!("{}.{}/{}", file.package(), svc.name(), m.name()));
                }
            }
        }
        assert_eq!(methods.len(), PERMISSIONS.len(), "{methods:?}");
        for m in &methods {
            let needs = needs(m).unwrap_or_else(|| panic!("{m} has no permissions"));
            assert!(!needs.is_empty(), "{m}");
        }
    }

    #[test]
    fn each_permission_is_checked_against_the_object_of_its_resource() {
        let t = Target {
            deployflow: Some("old-release"),
            cloneset: Some("app"),
            pod: None,
        };
        assert_eq!(t.name_for(&df("get")), Some("old-release"));
        assert_eq!(t.name_for(&df("create")), None, "a create names no object");
        assert_eq!(t.name_for(&cs("get")), Some("app"));
        assert_eq!(t.name_for(&pods("list")), None);
    }

    #[test]
    fn cache_keys_are_digests_that_tell_part_lists_apart() {
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        assert_eq!(digest(&[b"x"]), digest(&[b"x"]));
        let mut m = HashMap::new();
        for i in 0..(CACHE_BOUND + 5) {
            insert_bounded(
                &mut m,
                digest(&[&i.to_le_bytes()]),
                (),
                Duration::from_secs(60),
            );
        }
        assert!(m.len() <= CACHE_BOUND, "bounded: {}", m.len());
    }

    #[test]
    fn writes_need_write_verbs() {
        assert_eq!(
            needs("deployflow.DeployFlow/Next"),
            Some(&[df("patch")][..])
        );
        assert!(
            needs("application.Application/Scale")
                .unwrap()
                .contains(&df("create"))
        );
        assert!(needs("nope.Nope/X").is_none());
    }
}
