//! The gRPC front end: packages `deployflow`, `application` and `pod`, each call authorized
//! (unless `--insecure-anonymous`) and handed to [`ApiContext`]'s operations.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use triton_proto::application::{self as app, application_server::Application};
use triton_proto::deployflow::{self as pb, deploy_flow_server::DeployFlow};
use triton_proto::pod::{self as podpb, pod_server::Pod};

use super::auth::Target;
use super::convert;
use super::ops::{self, ApplyRequest, DeployStream, DeploysStream, Interrupt, NonUpdate};
use super::{ApiContext, ApiError};

/// The three services over one context.
#[derive(Clone)]
pub struct Services(pub Arc<ApiContext>);

type R<T> = Result<Response<T>, Status>;

impl Services {
    /// Authenticates and authorizes `method` (e.g. `deployflow.DeployFlow/Next`) on the
    /// namespace and object the request names.
    async fn guard<T>(
        &self,
        req: &Request<T>,
        method: &str,
        ns: &str,
        target: Target<'_>,
    ) -> Result<(), Status> {
        let Some(auth) = &self.0.auth else {
            return Ok(());
        };
        let bearer = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let caller = auth.check(bearer, method, ns, target).await?;
        tracing::debug!(method, user = %caller.user, namespace = ns, ?target, "authorized");
        Ok(())
    }
}

fn deploy_meta(m: &Option<pb::DeployMeta>) -> Result<(&str, &str), Status> {
    Ok(ops::meta(
        "deploy",
        m.as_ref().map(|m| (m.namespace.as_str(), m.name.as_str())),
    )?)
}

fn instance_meta(m: &Option<app::InstanceMeta>) -> Result<(&str, &str), Status> {
    Ok(ops::meta(
        "instance",
        m.as_ref().map(|m| (m.namespace.as_str(), m.name.as_str())),
    )?)
}

fn reply(d: pb::Deploy) -> Response<pb::DeployReply> {
    Response::new(pb::DeployReply { deploy: Some(d) })
}

#[tonic::async_trait]
impl DeployFlow for Services {
    async fn get(&self, req: Request<pb::DeployMetaRequest>) -> R<pb::DeployReply> {
        let (ns, name) = deploy_meta(&req.get_ref().deploy)?;
        self.guard(
            &req,
            "deployflow.DeployFlow/Get",
            ns,
            Target::deployflow(name),
        )
        .await?;
        Ok(reply(self.0.get(ns, name).await?))
    }

    async fn gets(&self, req: Request<pb::DeploysRequest>) -> R<pb::DeploysReply> {
        let filter = req.get_ref().filter.clone().unwrap_or_default();
        self.guard(
            &req,
            "deployflow.DeployFlow/Gets",
            &filter.namespace,
            Target::default(),
        )
        .await?;
        Ok(Response::new(pb::DeploysReply {
            deploys: self.0.gets(&filter)?,
        }))
    }

    type CancelStream = DeployStream;
    async fn cancel(&self, req: Request<pb::DeployMetaRequest>) -> R<DeployStream> {
        let (ns, name) = deploy_meta(&req.get_ref().deploy)?;
        self.guard(
            &req,
            "deployflow.DeployFlow/Cancel",
            ns,
            Target::deployflow(name),
        )
        .await?;
        Ok(Response::new(
            self.0.interrupt(ns, name, Interrupt::Cancel).await?,
        ))
    }

    type PauseStream = DeployStream;
    async fn pause(&self, req: Request<pb::DeployMetaRequest>) -> R<DeployStream> {
        let (ns, name) = deploy_meta(&req.get_ref().deploy)?;
        self.guard(
            &req,
            "deployflow.DeployFlow/Pause",
            ns,
            Target::deployflow(name),
        )
        .await?;
        Ok(Response::new(
            self.0.interrupt(ns, name, Interrupt::Pause).await?,
        ))
    }

    type ResumeStream = DeployStream;
    async fn resume(&self, req: Request<pb::DeployMetaRequest>) -> R<DeployStream> {
        let (ns, name) = deploy_meta(&req.get_ref().deploy)?;
        self.guard(
            &req,
            "deployflow.DeployFlow/Resume",
            ns,
            Target::deployflow(name),
        )
        .await?;
        Ok(Response::new(
            self.0.interrupt(ns, name, Interrupt::Resume).await?,
        ))
    }

    async fn r#continue(&self, req: Request<pb::ContinueRequest>) -> R<pb::DeployReply> {
        let (ns, name) = deploy_meta(&req.get_ref().deploy)?;
        self.guard(
            &req,
            "deployflow.DeployFlow/Continue",
            ns,
            Target::deployflow(name),
        )
        .await?;
        let df = self
            .0
            .continue_(ns, name, req.get_ref().target.as_ref())
            .await?;
        Ok(reply(convert::deploy(&df)))
    }

    async fn next(&self, req: Request<pb::NextRequest>) -> R<pb::DeployReply> {
        let (ns, name) = deploy_meta(&req.get_ref().deploy)?;
        self.guard(
            &req,
            "deployflow.DeployFlow/Next",
            ns,
            Target::deployflow(name),
        )
        .await?;
        Ok(reply(convert::deploy(&self.0.next(ns, name).await?)))
    }

    async fn delete(&self, req: Request<pb::DeployMetaRequest>) -> R<pb::EmptyReply> {
        let (ns, name) = deploy_meta(&req.get_ref().deploy)?;
        self.guard(
            &req,
            "deployflow.DeployFlow/Delete",
            ns,
            Target::deployflow(name),
        )
        .await?;
        self.0.delete(ns, name).await?;
        Ok(Response::new(pb::EmptyReply {}))
    }

    type WatchStream = DeployStream;
    async fn watch(&self, req: Request<pb::WatchRequest>) -> R<DeployStream> {
        let (ns, name) = deploy_meta(&req.get_ref().deploy)?;
        self.guard(
            &req,
            "deployflow.DeployFlow/Watch",
            ns,
            Target::deployflow(name),
        )
        .await?;
        let stream = self
            .0
            .watch(ns, name, req.get_ref().target.as_ref())
            .await?;
        Ok(Response::new(stream))
    }

    type ListAndWatchStream = DeploysStream;
    async fn list_and_watch(&self, req: Request<pb::DeploysRequest>) -> R<DeploysStream> {
        let filter = req.get_ref().filter.clone().unwrap_or_default();
        self.guard(
            &req,
            "deployflow.DeployFlow/ListAndWatch",
            &filter.namespace,
            Target::default(),
        )
        .await?;
        Ok(Response::new(self.0.list_and_watch(&filter)?))
    }

    async fn apply(&self, req: Request<pb::CreateRequest>) -> R<pb::DeployReply> {
        let r = req.get_ref();
        let spec = r.application_spec.clone().ok_or_else(|| {
            ApiError::from(triton_core::api::FieldError::new(
                "applicationSpec",
                "must be set",
            ))
        })?;
        let pick_s = |a: &str, b: &str| {
            if a.is_empty() {
                b.to_string()
            } else {
                a.to_string()
            }
        };
        let pick_i = |a: i32, b: i32| if a == 0 { b } else { a };
        let instance = pick_s(&spec.instance_name, &r.instance_name);
        self.guard(
            &req,
            "deployflow.DeployFlow/Apply",
            &r.namespace,
            Target::default(),
        )
        .await?;
        let template = spec.template.as_ref().map(super::convert::struct_to_json);
        let apply = ApplyRequest {
            namespace: r.namespace.clone(),
            app_id: pick_i(spec.app_id, r.app_id),
            group_id: pick_i(spec.group_id, r.group_id),
            app_name: pick_s(&spec.app_name, &r.app_name),
            instance: instance.clone(),
            replicas: spec.replicas,
            template,
            strategy: r.strategy.clone(),
            last_applied: serde_json::json!({
                "appID": pick_i(spec.app_id, r.app_id), "groupID": pick_i(spec.group_id, r.group_id),
                "appName": pick_s(&spec.app_name, &r.app_name), "instanceName": instance,
                "replicas": spec.replicas,
            }),
        };
        Ok(reply(self.0.apply(apply).await?))
    }
}

#[tonic::async_trait]
impl Application for Services {
    async fn get(&self, req: Request<app::InstanceMetaRequest>) -> R<app::InstanceReply> {
        let (ns, name) = instance_meta(&req.get_ref().instance)?;
        self.guard(
            &req,
            "application.Application/Get",
            ns,
            Target::cloneset(name),
        )
        .await?;
        Ok(Response::new(app::InstanceReply {
            instance: Some(self.0.app_get(ns, name)?),
        }))
    }

    async fn gets(&self, req: Request<app::GetsRequest>) -> R<app::InstancesReply> {
        let ns = req
            .get_ref()
            .filter
            .as_ref()
            .map(|f| f.namespace.clone())
            .unwrap_or_default();
        self.guard(&req, "application.Application/Gets", &ns, Target::default())
            .await?;
        Ok(Response::new(app::InstancesReply {
            instances: self.0.app_gets(&ns)?,
        }))
    }

    async fn restart(&self, req: Request<app::RestartRequest>) -> R<app::RestartReply> {
        let (ns, name) = instance_meta(&req.get_ref().instance)?;
        self.guard(
            &req,
            "application.Application/Restart",
            ns,
            Target::cloneset(name),
        )
        .await?;
        let deploy_name = self
            .0
            .start_non_update(
                ns,
                name,
                NonUpdate::Restart,
                req.get_ref().strategy.as_ref(),
            )
            .await?;
        Ok(Response::new(app::RestartReply { deploy_name }))
    }

    async fn scale(&self, req: Request<app::ScaleRequest>) -> R<app::ScaleReply> {
        let (ns, name) = instance_meta(&req.get_ref().instance)?;
        self.guard(
            &req,
            "application.Application/Scale",
            ns,
            Target::cloneset(name),
        )
        .await?;
        let r = req.get_ref();
        let deploy_name = self
            .0
            .start_non_update(ns, name, NonUpdate::Scale(r.replicas), r.strategy.as_ref())
            .await?;
        Ok(Response::new(app::ScaleReply { deploy_name }))
    }

    async fn rollback(&self, req: Request<app::RollbackRequest>) -> R<app::RollbackReply> {
        let (ns, name) = instance_meta(&req.get_ref().instance)?;
        let r = req.get_ref();
        let target = Target {
            cloneset: Some(name),
            deployflow: (!r.deploy_name.is_empty()).then_some(r.deploy_name.as_str()),
            pod: None,
        };
        self.guard(&req, "application.Application/Rollback", ns, target)
            .await?;
        let (deploy_name, rollback_to) = self
            .0
            .rollback(ns, name, &r.deploy_name, r.strategy.as_ref())
            .await?;
        Ok(Response::new(app::RollbackReply {
            deploy_name,
            rollback_to,
        }))
    }

    async fn delete(&self, req: Request<app::InstanceMetaRequest>) -> R<app::EmptyReply> {
        let (ns, name) = instance_meta(&req.get_ref().instance)?;
        self.guard(
            &req,
            "application.Application/Delete",
            ns,
            Target::cloneset(name),
        )
        .await?;
        self.0.app_delete(ns, name).await?;
        Ok(Response::new(app::EmptyReply {}))
    }
}

#[tonic::async_trait]
impl Pod for Services {
    async fn get(&self, req: Request<podpb::PodMetaRequest>) -> R<podpb::PodReply> {
        let (ns, name) = ops::meta(
            "pod",
            req.get_ref()
                .pod
                .as_ref()
                .map(|m| (m.namespace.as_str(), m.name.as_str())),
        )?;
        self.guard(&req, "pod.Pod/Get", ns, Target::pod(name))
            .await?;
        Ok(Response::new(podpb::PodReply {
            pod: Some(self.0.pod_get(ns, name)?),
        }))
    }

    async fn gets(&self, req: Request<podpb::GetsRequest>) -> R<podpb::PodsReply> {
        let f = req.get_ref().filter.clone().unwrap_or_default();
        self.guard(&req, "pod.Pod/Gets", &f.namespace, Target::default())
            .await?;
        Ok(Response::new(podpb::PodsReply {
            pods: self.0.pod_gets(&f, req.get_ref().no_sort)?,
        }))
    }
}
