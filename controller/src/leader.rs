//! Leader election with a `coordination.k8s.io/v1` Lease: only the holder reconciles. A replica
//! that cannot renew before the lease would expire exits (its Deployment restarts it), so two
//! replicas never both believe they lead. Writes use the Lease's resourceVersion (optimistic
//! concurrency), so two candidates cannot both take an expired lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// What a candidate should do with a lease it has just read (pure, unit-tested).
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Create the lease (it does not exist).
    Create,
    /// Take or renew it (we hold it, or it expired); `transition` when the holder changes.
    Acquire { transition: bool },
    /// Someone else holds a live lease.
    Wait { holder: String },
}

pub fn decide(
    lease: Option<&Lease>,
    me: &str,
    now: Timestamp,
    default_duration: Duration,
) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == me {
        return Decision::Acquire { transition: false };
    }
    let duration = spec
        .lease_duration_seconds
        .map_or(default_duration, |s| Duration::from_secs(s.max(0) as u64));
    let expired = match spec.renew_time {
        Some(MicroTime(t)) => now.duration_since(t).as_secs_f64() > duration.as_secs_f64(),
        None => true,
    };
    if holder.is_empty() || expired {
        Decision::Acquire { transition: true }
    } else {
        Decision::Wait { holder }
    }
}

impl Election {
    fn api(&self, client: &Client) -> Api<Lease> {
        Api::namespaced(client.clone(), &self.namespace)
    }

    fn spec(&self, transitions: i32, acquire: Option<MicroTime>) -> serde_json::Value {
        json!({
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_duration.as_secs(),
            "acquireTime": acquire.unwrap_or(MicroTime(Timestamp::now())),
            "renewTime": MicroTime(Timestamp::now()),
            "leaseTransitions": transitions,
        })
    }

    /// One attempt: true when we hold the lease afterwards.
    async fn try_acquire(&self, client: &Client) -> Result<bool, kube::Error> {
        let api = self.api(client);
        let current = api.get_opt(&self.name).await?;
        match decide(
            current.as_ref(),
            &self.identity,
            Timestamp::now(),
            self.lease_duration,
        ) {
            Decision::Create => {
                let lease: Lease = serde_json::from_value(json!({
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self.spec(0, None)
                }))
                .expect("a Lease");
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Decision::Acquire { transition } => {
                let mut lease = current.expect("decided on an existing lease");
                let spec = lease.spec.clone().unwrap_or_default();
                let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(transition);
                let acquire = if transition { None } else { spec.acquire_time };
                lease.spec = Some(
                    serde_json::from_value(self.spec(transitions, acquire)).expect("a LeaseSpec"),
                );
                // replace() carries the resourceVersion we read: a racing candidate gets 409.
                match api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Decision::Wait { .. } => Ok(false),
        }
    }

    /// Returns once this replica holds the lease.
    pub async fn acquire(&self, client: &Client) {
        let mut logged = false;
        loop {
            match self.try_acquire(client).await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return;
                }
                Ok(false) if !logged => {
                    tracing::info!(lease = %self.name, "another replica leads; waiting");
                    logged = true;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "leader election: reading or writing the lease failed")
                }
            }
            tokio::time::sleep(self.renew_every).await;
        }
    }

    /// Renews the lease until it cannot be renewed in time; then returns (the caller exits).
    pub async fn hold(&self, client: &Client) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_every).await;
            match self.try_acquire(client).await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "lost the lease to another replica");
                    return;
                }
                Err(error) => tracing::warn!(%error, "renewing the lease failed"),
            }
            // Stop well before the lease could expire for others.
            if last_renewal.elapsed() > self.lease_duration.mul_f64(0.8) {
                tracing::error!(lease = %self.name, "could not renew the lease in time");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_secs_ago: i64, duration: i32) -> Lease {
        let renew = Timestamp::now()
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(
                renewed_secs_ago,
            ))
            .unwrap();
        serde_json::from_value(json!({
            "metadata": {"name": "triton-controller"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "renewTime": MicroTime(renew)}
        }))
        .unwrap()
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(
            decide(None, "a", Timestamp::now(), Duration::from_secs(15)),
            Decision::Create
        );
    }

    #[test]
    fn our_lease_is_renewed() {
        assert_eq!(
            decide(
                Some(&lease("a", 1, 15)),
                "a",
                Timestamp::now(),
                Duration::from_secs(15)
            ),
            Decision::Acquire { transition: false }
        );
    }

    #[test]
    fn a_live_lease_of_another_replica_is_respected() {
        assert_eq!(
            decide(
                Some(&lease("b", 3, 15)),
                "a",
                Timestamp::now(),
                Duration::from_secs(15)
            ),
            Decision::Wait { holder: "b".into() }
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over() {
        assert_eq!(
            decide(
                Some(&lease("b", 20, 15)),
                "a",
                Timestamp::now(),
                Duration::from_secs(15)
            ),
            Decision::Acquire { transition: true }
        );
    }
}
