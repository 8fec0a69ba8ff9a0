//! Every label, annotation, condition type and field manager Triton uses, in one place.

/// Label that marks a workload (and its pods) as managed by Triton.
pub const MANAGED_BY_LABEL: &str = "managed-by";
/// Value of [`MANAGED_BY_LABEL`] on Triton-managed objects.
pub const MANAGED_BY_VALUE: &str = "triton-io";

/// Pod readiness gate (and pod condition type) that holds a pod out of Service endpoints until
/// its batch is baked.
pub const READY_GATE: &str = "apps.triton.io/ready";
/// Pod condition (not a gate) recording the readiness agent's last report.
pub const HEALTHY_CONDITION: &str = "apps.triton.io/healthy";

/// Pod annotation asking for the readiness-agent sidecar; its value is the probe target,
/// `http://[host]:port[/path]` or `tcp://[host]:port`.
pub const AGENT_ANNOTATION: &str = "apps.triton.io/agent";
/// Name of the injected readiness-agent container.
pub const AGENT_CONTAINER: &str = "triton-agent";
/// Name of the injected projected service-account token volume.
pub const AGENT_TOKEN_VOLUME: &str = "triton-agent-token";
/// Where the agent's token volume is mounted.
pub const AGENT_TOKEN_DIR: &str = "/var/run/secrets/triton";
/// Audience of the agent's projected token; the controller's TokenReview asks for it.
pub const AGENT_AUDIENCE: &str = "triton-agent";

/// API group of OpenKruise workloads.
pub const KRUISE_GROUP: &str = "apps.kruise.io";
/// Kind of the workload Triton releases.
pub const CLONESET_KIND: &str = "CloneSet";
/// Readiness gates Kruise adds itself; never removed or duplicated by Triton.
pub const KRUISE_GATES: [&str; 2] = ["InPlaceUpdateReady", "KruisePodReady"];

/// Annotation on a CloneSet naming the DeployFlow that is releasing it. It marks the release's
/// hold on the CloneSet instead of an owner reference, so deleting a DeployFlow never lets the
/// garbage collector delete the application.
pub const RELEASE_ANNOTATION: &str = "apps.triton.io/deployflow";
/// Finalizer on DeployFlows: a deleted DeployFlow's running release is cancelled and its hold on
/// the CloneSet released before the object goes.
pub const RELEASE_FINALIZER: &str = "apps.triton.io/release";
/// Label naming the CloneSet instance of a pod (and of the CloneSet).
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Label naming the application.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Pod label with the CloneSet revision a pod runs.
pub const REVISION_LABEL: &str = "controller-revision-hash";
