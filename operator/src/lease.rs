//! Leader election with a coordination.k8s.io/v1 Lease, with client-go's semantics and a
//! hard bound on when a leader may still write.
//!
//! - **Who may write.** This replica leads until `sent + renew_deadline`, where `sent` is
//!   the moment (on this process's monotonic clock) its last successful renewal was *sent*.
//!   [`Leadership`] is that deadline: the write gate of the leader's client checks it before
//!   every byte it sends, and [`Leadership::lost`] fires at the deadline even if a renewal
//!   call hangs.
//! - **When a standby may take over.** Never by comparing the holder's `renewTime` with our
//!   wall clock (replicas' clocks differ). As client-go does, a candidate remembers the last
//!   Lease record it saw and *when it saw it change*, on its own monotonic clock; it may
//!   claim a Lease held by another replica only after the record stayed unchanged for the
//!   holder's `leaseDurationSeconds` since then. The claim is an update with the read
//!   `resourceVersion`, so a renewal that lands meanwhile wins.
//! - **Why they cannot overlap.** The holder's last renewal was sent at `t` and reached the
//!   API server after `t`; a standby saw that record after it was stored, so it claims no
//!   earlier than `t + lease_duration`, while the holder stopped writing at
//!   `t + renew_deadline`. `lease_duration - renew_deadline` (a third of the lease) is the
//!   margin for a write admitted just before the deadline to reach the server.
//! - Renewals use their own client without kube's retry layer and each attempt is bounded
//!   by the time leadership has left, so a slow API server cannot stretch leadership.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Timing of the election, derived from the lease duration as client-go's defaults are
/// (15 s lease, 10 s renew deadline, 2 s retry period).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a Lease record must stay unchanged before another replica may claim it.
    pub lease_duration: Duration,
    /// How long after sending its last successful renewal the leader may still write.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby looks.
    pub retry_period: Duration,
}

impl LeaseTiming {
    pub fn from_lease_duration(lease_duration: Duration) -> Self {
        let renew_deadline = lease_duration * 2 / 3;
        Self {
            lease_duration,
            renew_deadline,
            retry_period: renew_deadline / 5,
        }
    }
}

// === who may write ===

/// Whether this replica may write now. Shared by the renewal loop (which extends it), the
/// write gate of the leader's client and the controller (which is cancelled when it ends).
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<LeadershipInner>,
}

struct LeadershipInner {
    /// `None`: no leader election, always leading.
    until: Option<Mutex<Option<Instant>>>,
    changed: watch::Sender<u64>,
}

impl Leadership {
    /// Leader election is off: this replica always leads.
    pub fn always() -> Self {
        Self {
            inner: Arc::new(LeadershipInner {
                until: None,
                changed: watch::channel(0).0,
            }),
        }
    }

    /// Leader election is on: this replica leads only while it holds a renewed Lease.
    pub fn elected() -> Self {
        Self {
            inner: Arc::new(LeadershipInner {
                until: Some(Mutex::new(None)),
                changed: watch::channel(0).0,
            }),
        }
    }

    fn deadline(&self) -> Option<Option<Instant>> {
        self.inner
            .until
            .as_ref()
            .map(|m| *m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether this replica may write at this instant.
    pub fn is_leading(&self) -> bool {
        match self.deadline() {
            None => true,
            Some(until) => until.is_some_and(|u| Instant::now() < u),
        }
    }

    /// When leadership ends unless renewed (`None` when not leading or always leading).
    pub fn until(&self) -> Option<Instant> {
        self.deadline().flatten()
    }

    /// A renewal sent at `sent` succeeded: lead until `sent + renew_deadline`.
    pub fn renewed(&self, sent: Instant, renew_deadline: Duration) {
        if let Some(m) = &self.inner.until {
            let mut until = m.lock().unwrap_or_else(|e| e.into_inner());
            let next = sent + renew_deadline;
            *until = Some(until.map_or(next, |u| u.max(next)));
        }
        self.inner.changed.send_modify(|g| *g += 1);
    }

    /// Leadership ends now (another replica holds the Lease, or we released it).
    pub fn revoke(&self) {
        if let Some(m) = &self.inner.until {
            *m.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        self.inner.changed.send_modify(|g| *g += 1);
    }

    /// Resolves once this replica no longer leads: at the deadline on the monotonic clock,
    /// whatever any renewal call is doing. Never resolves without leader election.
    pub async fn lost(&self) {
        if self.inner.until.is_none() {
            return std::future::pending().await;
        }
        let mut changed = self.inner.changed.subscribe();
        loop {
            let Some(until) = self.until().filter(|u| Instant::now() < *u) else {
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(until)) => {}
                _ = changed.changed() => {}
            }
        }
    }
}

// === the Lease record, as a candidate observes it ===

/// What a candidate compares between two reads of the Lease (client-go's
/// `LeaderElectionRecord`): any change means its holder is alive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    pub lease_duration_seconds: Option<i32>,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub transitions: Option<i32>,
}

impl LeaseRecord {
    pub fn of(spec: Option<&LeaseSpec>) -> Self {
        let Some(s) = spec else {
            return Self::default();
        };
        Self {
            holder: s.holder_identity.clone().filter(|h| !h.is_empty()),
            lease_duration_seconds: s.lease_duration_seconds,
            acquire_time: s.acquire_time.as_ref().map(|t| t.0),
            renew_time: s.renew_time.as_ref().map(|t| t.0),
            transitions: s.lease_transitions,
        }
    }
}

/// The last record seen and when (on our monotonic clock) it was first seen as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub record: LeaseRecord,
    pub since: Instant,
}

/// Remembers `record`, read at `now`: the time of observation moves only when the record
/// changed.
pub fn observe(prev: Option<&Observation>, record: LeaseRecord, now: Instant) -> Observation {
    match prev {
        Some(p) if p.record == record => p.clone(),
        _ => Observation { record, since: now },
    }
}

/// Who may hold the Lease, as far as this candidate can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No holder: anyone may claim it.
    Free,
    /// We hold it.
    Ours,
    /// Another replica holds it; it may be claimed after `expires_in` unless it changes.
    Held { expires_in: Duration },
}

/// Judges an observation at `now`. `default_duration` stands in for a record without
/// `leaseDurationSeconds`. No wall-clock time in the record is consulted.
pub fn judge(obs: &Observation, me: &str, now: Instant, default_duration: Duration) -> Verdict {
    match obs.record.holder.as_deref() {
        None => Verdict::Free,
        Some(h) if h == me => Verdict::Ours,
        Some(_) => {
            let duration = obs
                .record
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_duration, Duration::from_secs);
            let expires = obs.since + duration;
            if now >= expires {
                Verdict::Free
            } else {
                Verdict::Held {
                    expires_in: expires - now,
                }
            }
        }
    }
}

// === the lock ===

/// What one acquire-or-renew attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// We hold the lease (acquired or renewed).
    Held,
    /// Someone else holds a live lease.
    Taken,
}

/// How holding the Lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldEnd {
    /// Asked to stop renewing (shutdown): the caller releases the Lease.
    Released,
    /// Leadership lost: no renewal succeeded before the deadline, or another replica holds it.
    Lost,
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// One candidate for the Lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    observed: Arc<Mutex<Option<Observation>>>,
}

impl LeaseLock {
    /// `client` must be one for renewals only: without kube's retry layer, with short
    /// timeouts.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: String,
        timing: LeaseTiming,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity,
            timing,
            observed: Arc::default(),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    fn remember(&self, record: LeaseRecord, now: Instant) -> Observation {
        let mut obs = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        let next = observe(obs.as_ref(), record, now);
        *obs = Some(next.clone());
        next
    }

    /// One acquire-or-renew attempt (client-go's `tryAcquireOrRenew`): read the Lease, judge
    /// it from what we observed, and write ourselves in with the read `resourceVersion`.
    /// A renewal passes the end of its leadership as `write_by`: past it, the attempt gives
    /// up instead of writing (a process resumed after a stop must not write a stale renewal).
    pub async fn try_claim(&self, write_by: Option<Instant>) -> Result<Claim, kube::Error> {
        let wall = MicroTime(Timestamp::now());
        let existing = self.api.get_opt(&self.name).await?;
        let Some(mut lease) = existing else {
            let spec = LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(secs(self.timing.lease_duration)),
                acquire_time: Some(wall.clone()),
                renew_time: Some(wall),
                lease_transitions: Some(0),
                ..Default::default()
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(spec.clone()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.remember(LeaseRecord::of(Some(&spec)), Instant::now());
                    Ok(Claim::Held)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Claim::Taken),
                Err(e) => Err(e),
            };
        };
        let obs = self.remember(LeaseRecord::of(lease.spec.as_ref()), Instant::now());
        let verdict = judge(
            &obs,
            &self.identity,
            Instant::now(),
            self.timing.lease_duration,
        );
        if let Verdict::Held { expires_in } = verdict {
            debug!(holder = ?obs.record.holder, ?expires_in, "the Lease is held by another replica");
            return Ok(Claim::Taken);
        }
        if write_by.is_some_and(|t| Instant::now() >= t) {
            return Ok(Claim::Taken);
        }
        let spec = lease.spec.get_or_insert_with(Default::default);
        if verdict != Verdict::Ours {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            spec.acquire_time = Some(wall.clone());
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.lease_duration_seconds = Some(secs(self.timing.lease_duration));
        spec.renew_time = Some(wall);
        let record = LeaseRecord::of(Some(spec));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.remember(record, Instant::now());
                Ok(Claim::Held)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Claim::Taken),
            Err(e) => Err(e),
        }
    }

    /// Stands by until we hold the Lease (then `true`, with `leadership` extended from the
    /// moment the winning attempt started) or `stop` fires (`false`).
    pub async fn acquire(&self, leadership: &Leadership, stop: &mut watch::Receiver<bool>) -> bool {
        loop {
            if *stop.borrow() {
                return false;
            }
            let sent = Instant::now();
            let attempt = tokio::time::timeout(self.timing.renew_deadline, self.try_claim(None));
            let outcome = tokio::select! {
                r = attempt => r,
                _ = stop.changed() => return false,
            };
            match outcome {
                Ok(Ok(Claim::Held)) => {
                    leadership.renewed(sent, self.timing.renew_deadline);
                    info!(identity = %self.identity, lease = %self.name, "became the leader");
                    return true;
                }
                Ok(Ok(Claim::Taken)) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, lease = %self.name, "could not read or claim the Lease")
                }
                Err(_) => warn!(lease = %self.name, "claiming the Lease timed out"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.timing.retry_period) => {}
                _ = stop.changed() => return false,
            }
        }
    }

    /// Renews every retry period while we lead. Each attempt may take at most the time
    /// leadership has left; a renewal that succeeds extends leadership from when it was sent.
    /// Returns when leadership is lost or `release` fires.
    pub async fn hold(
        &self,
        leadership: &Leadership,
        mut release: watch::Receiver<bool>,
    ) -> HoldEnd {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.timing.retry_period) => {}
                _ = release.changed() => return HoldEnd::Released,
            }
            let Some(until) = leadership.until().filter(|u| Instant::now() < *u) else {
                warn!(lease = %self.name, "no renewal of the Lease succeeded within the renew deadline; giving up leadership");
                leadership.revoke();
                return HoldEnd::Lost;
            };
            let sent = Instant::now();
            let attempt = tokio::time::timeout_at(
                tokio::time::Instant::from_std(until),
                self.try_claim(Some(until)),
            );
            let outcome = tokio::select! {
                r = attempt => r,
                _ = release.changed() => return HoldEnd::Released,
            };
            match outcome {
                Ok(Ok(Claim::Held)) => leadership.renewed(sent, self.timing.renew_deadline),
                Ok(Ok(Claim::Taken)) => {
                    warn!(lease = %self.name, "another replica holds the Lease (or our renewal came too late); giving up leadership");
                    leadership.revoke();
                    return HoldEnd::Lost;
                }
                Ok(Err(e)) => warn!(error = %e, lease = %self.name, "could not renew the Lease"),
                Err(_) => {
                    warn!(lease = %self.name, "renewing the Lease did not finish before the renew deadline; giving up leadership");
                    leadership.revoke();
                    return HoldEnd::Lost;
                }
            }
        }
    }

    /// Gives the Lease up (only if we still hold it) so that a successor takes over at once.
    /// Call only after every write of this replica has stopped.
    pub async fn release(&self) {
        let attempt = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(());
            };
            let Some(spec) = lease.spec.as_mut() else {
                return Ok(());
            };
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(self.timing.renew_deadline, attempt).await {
            Ok(Ok(())) => info!(lease = %self.name, "released the Lease"),
            Ok(Err(e)) => debug!(error = %e, "could not release the Lease"),
            Err(_) => debug!("releasing the Lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed: &str) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some("2026-11-29T15:00:00Z".parse().unwrap()),
            renew_time: Some(renewed.parse().unwrap()),
            transitions: Some(3),
        }
    }

    const LEASE: Duration = Duration::from_secs(15);

    #[test]
    fn timing_follows_client_go_defaults() {
        let t = LeaseTiming::from_lease_duration(LEASE);
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period, Duration::from_secs(2));
        assert!(t.renew_deadline < t.lease_duration);
    }

    #[test]
    fn absent_or_own_or_released_leases_are_claimable_at_once() {
        let t0 = Instant::now();
        let obs = observe(None, LeaseRecord::default(), t0);
        assert_eq!(judge(&obs, "a", t0, LEASE), Verdict::Free);
        let obs = observe(None, held_by("a", "2026-11-29T16:00:00Z"), t0);
        assert_eq!(judge(&obs, "a", t0, LEASE), Verdict::Ours);
        let released = LeaseRecord {
            holder: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(LeaseRecord::of(None), LeaseRecord::default());
        let spec = LeaseSpec {
            holder_identity: released.holder.clone(),
            ..Default::default()
        };
        let obs = observe(None, LeaseRecord::of(Some(&spec)), t0);
        assert_eq!(judge(&obs, "a", t0, LEASE), Verdict::Free);
    }

    #[test]
    fn expiry_counts_from_when_we_saw_the_record_change_on_our_clock() {
        let t0 = Instant::now();
        let rec = held_by("b", "2026-11-29T16:00:00Z");
        let obs = observe(None, rec.clone(), t0);
        assert_eq!(
            judge(&obs, "a", t0 + Duration::from_secs(14), LEASE),
            Verdict::Held {
                expires_in: Duration::from_secs(1)
            }
        );
        // The same record read again later does not restart the count...
        let again = observe(Some(&obs), rec.clone(), t0 + Duration::from_secs(10));
        assert_eq!(again.since, t0);
        assert_eq!(judge(&again, "a", t0 + LEASE, LEASE), Verdict::Free);
        // ...a renewal (any change of the record) does.
        let renewed = observe(
            Some(&again),
            held_by("b", "2026-11-29T16:00:02Z"),
            t0 + Duration::from_secs(14),
        );
        assert_eq!(renewed.since, t0 + Duration::from_secs(14));
        assert!(matches!(
            judge(&renewed, "a", t0 + LEASE, LEASE),
            Verdict::Held { .. }
        ));
        // The holder's own lease duration counts, not ours.
        let long = LeaseRecord {
            lease_duration_seconds: Some(60),
            ..rec
        };
        let obs = observe(None, long, t0);
        assert!(matches!(
            judge(&obs, "a", t0 + Duration::from_secs(30), LEASE),
            Verdict::Held { .. }
        ));
    }

    #[test]
    fn a_holder_whose_clock_is_off_is_judged_by_our_observation_only() {
        let t0 = Instant::now();
        // The holder's clock is 30 s ahead of ours: its renewTime is in our future. A
        // wall-clock comparison would never let us take over; we take over one lease after
        // the record stopped changing.
        let ahead = Timestamp::now() + jiff::SignedDuration::from_secs(30);
        let rec = LeaseRecord {
            renew_time: Some(ahead),
            ..held_by("b", "2026-11-29T16:00:00Z")
        };
        let obs = observe(None, rec.clone(), t0);
        assert!(matches!(
            judge(&obs, "a", t0 + Duration::from_secs(14), LEASE),
            Verdict::Held { .. }
        ));
        assert_eq!(judge(&obs, "a", t0 + LEASE, LEASE), Verdict::Free);
        // 30 s behind: its renewTime looks 30 s old. A wall-clock comparison would take a
        // live lease at once; we wait for it to stop changing.
        let behind = Timestamp::now() - jiff::SignedDuration::from_secs(30);
        let rec = LeaseRecord {
            renew_time: Some(behind),
            ..rec
        };
        let obs = observe(Some(&obs), rec, t0 + Duration::from_secs(1));
        assert!(matches!(
            judge(&obs, "a", t0 + Duration::from_secs(2), LEASE),
            Verdict::Held { .. }
        ));
    }

    #[tokio::test]
    async fn leadership_ends_at_the_renew_deadline_even_if_nothing_else_happens() {
        let deadline = Duration::from_millis(200);
        let l = Leadership::elected();
        assert!(!l.is_leading(), "a standby does not lead");
        tokio::time::timeout(Duration::from_millis(50), l.lost())
            .await
            .expect("not leading: lost at once");
        let sent = Instant::now();
        l.renewed(sent, deadline);
        assert!(l.is_leading());
        // A renewal sent earlier never shortens leadership.
        l.renewed(sent - Duration::from_secs(1), deadline);
        assert_eq!(l.until(), Some(sent + deadline));
        // Nothing renews (a renewal call hangs): lost fires at sent + deadline.
        tokio::time::timeout(Duration::from_secs(2), l.lost())
            .await
            .expect("lost fires at the deadline");
        assert!(Instant::now() >= sent + deadline);
        assert!(!l.is_leading());
    }

    #[tokio::test]
    async fn a_renewal_postpones_the_loss_and_revoke_ends_it_at_once() {
        let deadline = Duration::from_millis(300);
        let l = Leadership::elected();
        l.renewed(Instant::now(), deadline);
        let waiter = tokio::spawn({
            let l = l.clone();
            async move {
                l.lost().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let renewed_at = Instant::now();
        l.renewed(renewed_at, deadline);
        let lost_at = waiter.await.unwrap();
        assert!(
            lost_at >= renewed_at + deadline,
            "the renewal moved the deadline"
        );
        l.renewed(Instant::now(), Duration::from_secs(60));
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.lost().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        l.revoke();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("revoke ends leadership at once")
            .unwrap();
        assert!(!l.is_leading());
        assert!(Leadership::always().is_leading());
    }
}
