//! Leader election with a coordination.k8s.io/v1 Lease (the client-go protocol, as kubert
//! does it): acquire when absent or expired, renew well within the lease duration, give up
//! leadership (and stop writing) as soon as a renewal cannot be confirmed in time, release
//! on shutdown so a successor need not wait for expiry.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// One candidate for the Lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// What happened to a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// We hold the lease (acquired or renewed).
    Held,
    /// Someone else holds a live lease.
    Taken,
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl LeaseLock {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: String,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity,
            duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Pure decision: may `me` take or keep `spec` at `now`?
    pub fn may_claim(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> bool {
        let Some(spec) = spec else { return true };
        match spec.holder_identity.as_deref() {
            None | Some("") => true,
            Some(h) if h == me => true,
            Some(_) => {
                let renewed = spec
                    .renew_time
                    .as_ref()
                    .or(spec.acquire_time.as_ref())
                    .map(|t| t.0);
                let dur = i64::from(spec.lease_duration_seconds.unwrap_or(15));
                match renewed {
                    Some(t) => t.as_second().saturating_add(dur) < now.as_second(),
                    None => true,
                }
            }
        }
    }

    /// One acquire-or-renew attempt (optimistic concurrency on resourceVersion).
    pub async fn try_claim(&self) -> Result<Claim, kube::Error> {
        let now = Timestamp::now();
        let existing = self.api.get_opt(&self.name).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs(self.duration)),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Claim::Held),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Claim::Taken),
                Err(e) => Err(e),
            };
        };
        if !Self::may_claim(lease.spec.as_ref(), &self.identity, now) {
            return Ok(Claim::Taken);
        }
        let spec = lease.spec.get_or_insert_with(Default::default);
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !ours {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            spec.acquire_time = Some(MicroTime(now));
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.lease_duration_seconds = Some(secs(self.duration));
        spec.renew_time = Some(MicroTime(now));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Claim::Held),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Claim::Taken),
            Err(e) => Err(e),
        }
    }

    /// Waits until we hold the lease (or `stop` fires: then `false`).
    pub async fn acquire(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let retry = (self.duration / 5).max(Duration::from_millis(200));
        loop {
            match self.try_claim().await {
                Ok(Claim::Held) => {
                    info!(identity = %self.identity, lease = %self.name, "became the leader");
                    return true;
                }
                Ok(Claim::Taken) => {
                    debug!(lease = %self.name, "another replica leads; standing by")
                }
                Err(e) => {
                    warn!(error = %e, lease = %self.name, "could not read or claim the lease")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stop.changed() => return false,
            }
        }
    }

    /// Renews until a renewal cannot be confirmed within two thirds of the lease duration;
    /// then returns (leadership is lost). Returns early when `stop` fires.
    pub async fn hold(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let every = (self.duration / 3).max(Duration::from_millis(200));
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return true,
            }
            match self.try_claim().await {
                Ok(Claim::Held) => last_ok = tokio::time::Instant::now(),
                Ok(Claim::Taken) => {
                    warn!(lease = %self.name, "another replica took the lease");
                    return false;
                }
                Err(e) => warn!(error = %e, "could not renew the lease"),
            }
            if last_ok.elapsed() > self.duration * 2 / 3 {
                warn!(lease = %self.name, "lease renewal overdue; giving up leadership");
                return false;
            }
        }
    }

    /// Gives the lease up so a successor takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            debug!(error = %e, "could not release the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_absent_own_or_expired_leases_only() {
        let now: Timestamp = "2026-11-29T16:00:00Z".parse().unwrap();
        let spec = |holder: Option<&str>, renewed: &str| LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(LeaseLock::may_claim(None, "a", now));
        assert!(LeaseLock::may_claim(
            Some(&spec(None, "2026-11-29T15:59:59Z")),
            "a",
            now
        ));
        assert!(LeaseLock::may_claim(
            Some(&spec(Some("a"), "2026-11-29T15:59:59Z")),
            "a",
            now
        ));
        assert!(!LeaseLock::may_claim(
            Some(&spec(Some("b"), "2026-11-29T15:59:50Z")),
            "a",
            now
        ));
        assert!(LeaseLock::may_claim(
            Some(&spec(Some("b"), "2026-11-29T15:59:40Z")),
            "a",
            now
        ));
    }
}
