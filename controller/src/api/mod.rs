//! The gRPC and REST API a PaaS drives releases with (wire-compatible with the original
//! Triton's), served by every controller replica: every verb is a patch or a create of a
//! DeployFlow, which the Lease holder then acts on.
//!
//! * [`ops`]: the operations, shared by both protocols;
//! * [`grpc`] and [`rest`]: the two front ends (protocol mapping only);
//! * [`auth`]: TokenReview + SubjectAccessReview, and the one table of what each call needs;
//! * [`convert`]: DeployFlows, CloneSets and pods as API messages;
//! * [`serve`]: the listeners (TLS re-read on rotation, or plaintext for the local demo).
//!
//! The decisions (validation, paging, `Next` targets, when a watch ends) are in
//! `triton_core::api`.

pub mod auth;
pub mod convert;
pub mod grpc;
pub mod ops;
pub mod rest;
pub mod serve;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::runtime::reflector::Store;
use tokio::sync::broadcast;
use triton_core::api::{FieldError, Refusal};

use crate::raw::{RawCloneSet, RawDeployFlow};

/// A change of a DeployFlow as the watch delivered it (after the cache applied it).
#[derive(Clone, Debug)]
pub struct Change {
    pub obj: Arc<RawDeployFlow>,
    /// The object decoded once for every stream (`None` when it cannot be read).
    pub typed: Option<Arc<crate::crd::DeployFlow>>,
    pub deleted: bool,
}

impl Change {
    pub fn new(obj: Arc<RawDeployFlow>, deleted: bool) -> Self {
        let typed = crate::reconcile::decode(&obj).ok().map(Arc::new);
        Change {
            obj,
            typed,
            deleted,
        }
    }
}

/// Changes buffered per stream before a slow stream re-reads the cache instead.
pub const CHANGE_BUFFER: usize = 1024;

/// What the API reads and writes with.
pub struct ApiContext {
    pub client: Client,
    pub deployflows: Store<RawDeployFlow>,
    pub clonesets: Store<RawCloneSet>,
    pub pods: Store<Pod>,
    pub changes: broadcast::Sender<Change>,
    /// `None` with `--insecure-anonymous`.
    pub auth: Option<auth::Authorizer>,
    /// Open streams (Watch, ListAndWatch, Cancel, Pause, Resume), for the metric and the tests.
    pub streams: AtomicI64,
    /// The most streams this replica serves at once (`--api-max-streams`).
    pub max_streams: i64,
    /// Instances a request is starting a release of on this replica (check, create, wait).
    pub starting: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

impl ApiContext {
    /// A context for a client that runs the operations with its own credentials (the kubectl
    /// plugin): no authorization of its own (the API server's RBAC applies to every call it
    /// makes) and no stream cap (its one user).
    pub fn local(
        client: Client,
        deployflows: Store<RawDeployFlow>,
        clonesets: Store<RawCloneSet>,
        pods: Store<Pod>,
        changes: broadcast::Sender<Change>,
    ) -> Self {
        ApiContext {
            client,
            deployflows,
            clonesets,
            pods,
            changes,
            auth: None,
            streams: Default::default(),
            max_streams: i64::MAX,
            starting: Default::default(),
        }
    }

    pub fn open_streams(&self) -> i64 {
        self.streams.load(Ordering::Relaxed)
    }
}

/// Why a call failed; one code per variant in both protocols.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A malformed request field: InvalidArgument, 400.
    #[error("{0}")]
    Invalid(#[from] FieldError),
    /// A missing object: NotFound, 404.
    #[error("{0}")]
    NotFound(String),
    /// The release's state does not allow it: FailedPrecondition, 409.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// No token, or one the API server does not accept: Unauthenticated, 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// RBAC says no: PermissionDenied, 403.
    #[error("{0}")]
    Forbidden(String),
    /// The API server refused a write as invalid (e.g. a CRD rule): InvalidArgument, 400.
    #[error("{0}")]
    Rejected(String),
    /// A concurrent change won: Aborted, 409; the caller may retry.
    #[error("{0}")]
    Conflict(String),
    /// The API server could not be reached or failed: Unavailable, 503.
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// The cache has not seen the object in time: Unavailable, 503.
    #[error("{0}")]
    Timeout(String),
    /// Too many streams open: ResourceExhausted, 429.
    #[error("{0}")]
    Exhausted(String),
}

impl ApiError {
    /// Maps a failed API-server call: its status code decides the API's.
    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        let context = context.into();
        match &source {
            kube::Error::Api(s) if s.code == 404 => {
                ApiError::NotFound(format!("{context}: not found"))
            }
            kube::Error::Api(s) if s.code == 409 => {
                ApiError::Conflict(format!("{context}: {}", s.message))
            }
            kube::Error::Api(s) if s.code == 400 || s.code == 422 => {
                ApiError::Rejected(format!("{context}: {}", s.message))
            }
            _ => ApiError::Kube { context, source },
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            ApiError::Invalid(_) | ApiError::Rejected(_) => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::Refused(_) => Code::FailedPrecondition,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::Forbidden(_) => Code::PermissionDenied,
            ApiError::Conflict(_) => Code::Aborted,
            ApiError::Kube { .. } | ApiError::Timeout(_) => Code::Unavailable,
            ApiError::Exhausted(_) => Code::ResourceExhausted,
        }
    }

    pub fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            ApiError::Invalid(_) | ApiError::Rejected(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Refused(_) | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Kube { .. } | ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Exhausted(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;
