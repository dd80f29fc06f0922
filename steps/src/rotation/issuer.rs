//! AwaitIssuer: waits for `linkerd-identity-issuer` to be re-issued under the new root (the one
//! manual step: `cmctl renew -n linkerd linkerd-identity-issuer`) and for the identity
//! controller to load it.

use super::invariant::Expectation;
use super::{names, POLL};
use crate::convergence::{cert_state, CertState};
use crate::pki::{short_fingerprint, Certificate};
use crate::probe;
use crate::read::{self, IdentityEvent};
use crate::step::{ErrorCategory, Outcome, Progress, Step, StepContext, StepError, StepReport};
use async_trait::async_trait;

use super::approval::{self, Gate};
use crate::certmanager;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use trust_rotation_crds::{
    ApprovalGate, CertificateRef, ControlPlaneRef, IssuerRenewalRecord, Phase, RenewalMode,
    RotationRecord, TrustAnchorRotationSpec,
};

/// Event reasons of the identity controller (on `Deployment/linkerd-identity`).
pub const ISSUER_UPDATED: &str = "IssuerUpdated";
pub const ISSUER_UPDATE_SKIPPED: &str = "IssuerUpdateSkipped";
pub const ISSUER_VALIDATION_FAILED: &str = "IssuerValidationFailed";

/// What identity did with the issuer it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityView {
    /// Events on the identity Deployment, oldest first.
    pub events: Vec<IdentityEvent>,
    /// Every identity pod started after the issuer changed (so it loaded it at start, against
    /// the expanded bundle it read then): see [`loaded_at_start_since`].
    pub restarted_since_issuer: bool,
    /// Every running identity pod's own proxy serves a workload certificate signed by this
    /// issuer. That proxy certifies through its local identity controller, so this proves the
    /// controller signs with the issuer, whatever the clocks and Events say.
    pub signing_with_issuer: bool,
}

/// The time from which an identity pod that started surely read `issuer` at start.
///
/// Kubernetes records a container's start, and X.509 an issuer's notBefore, to the second: an
/// identity pod that started in the issuer's own second may have read the Secret just before
/// cert-manager wrote it, and then signs with the old issuer until its hot reload (after the
/// kubelet's volume update). Counting that pod as restarted onto the new issuer would let the
/// next phase restart workloads onto certificates from the old one.
pub fn loaded_at_start_since(issuer: &Certificate) -> jiff::Timestamp {
    issuer.not_before() + jiff::SignedDuration::from_secs(1)
}

/// The awaited manual step, as the status says it.
pub fn renew_hint(issuer: &CertificateRef) -> String {
    format!(
        "run `cmctl renew -n {} {}` (or `linkerd trust renew issuer`) to re-issue the identity issuer under the new trust anchor",
        issuer.namespace, issuer.certificate
    )
}

/// Decides over the issuer chain and what identity reported.
pub fn decide_issuer(
    issuer: &Certificate,
    new_root: &Certificate,
    identity: &IdentityView,
    issuer_ref: &CertificateRef,
    cp: &ControlPlaneRef,
) -> Outcome {
    if !issuer.is_signed_by(new_root) {
        return Outcome::wait(
            format!(
                "waiting for the identity issuer to be re-issued under the new trust anchor {} (the current issuer {} is not): {}",
                short_fingerprint(new_root.fingerprint()),
                short_fingerprint(issuer.fingerprint()),
                renew_hint(issuer_ref)
            ),
            POLL,
        );
    }
    if identity.restarted_since_issuer || identity.signing_with_issuer {
        return Outcome::Done;
    }
    // Events since the issuer changed; the latest verdict wins.
    let since = issuer.not_before();
    let verdict = identity
        .events
        .iter()
        .filter(|e| {
            e.at >= since
                && [
                    ISSUER_UPDATED,
                    ISSUER_UPDATE_SKIPPED,
                    ISSUER_VALIDATION_FAILED,
                ]
                .contains(&e.reason.as_str())
        })
        .max_by_key(|e| e.at);
    match verdict {
        Some(e) if e.reason == ISSUER_UPDATED => Outcome::Done,
        Some(e) => Outcome::blocked(format!(
            "identity rejected the new issuer {} ({} at {}: {}): the identity controller validates a new \
             issuer against the trust bundle it loaded at start. Recover with `kubectl -n {} rollout restart deploy/{}` (the \
             bundle already holds both roots); the rotation continues once identity has loaded the issuer",
            short_fingerprint(issuer.fingerprint()),
            e.reason,
            e.at,
            e.message,
            cp.namespace,
            cp.identity_deployment
        )),
        None => Outcome::wait(
            format!(
                "the identity issuer {} was re-issued under the new trust anchor; waiting for {}/{} to load it (no {ISSUER_UPDATED} \
                 event since {since})",
                short_fingerprint(issuer.fingerprint()),
                cp.namespace,
                cp.identity_deployment
            ),
            POLL,
        ),
    }
}

pub struct AwaitIssuer;

#[async_trait]
impl Step for AwaitIssuer {
    fn name(&self) -> &str {
        names::AWAIT_ISSUER
    }

    fn phase(&self) -> Phase {
        Phase::WaitingForIdentityRotation
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepReport, StepError> {
        // The bundle invariant first: nothing advances on a broken bundle.
        let guarded = crate::guarded!(ctx);
        let mut progress = guarded.progress();
        let mut notices = Vec::new();
        let outcome = self
            .execute(ctx, guarded.expectation, &mut progress, &mut notices)
            .await?;
        Ok(notices
            .into_iter()
            .fold(outcome.with(progress), |r, (reason, note)| {
                r.notice(reason, note)
            }))
    }
}

/// Event reason when the operator triggers the identity issuer's re-issuance.
pub const ISSUER_RENEWAL_TRIGGERED: &str = "IssuerRenewalTriggered";

/// What the automation does while the issuer is not yet signed by the new anchor (the trust
/// bundle has propagated: this step runs only after AwaitPropagation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Automate {
    /// `issuerRenewal: Manual`: wait for the person.
    Manual,
    /// Trigger the re-issuance now.
    Trigger,
    /// Triggered before in this rotation (at the time given): wait for cert-manager.
    Triggered(String),
}

/// Pure: whether the operator triggers the re-issuance, given the spec and what the rotation
/// recorded. Exactly once per rotation id (a retargeted rotation has a new id and re-issues
/// again, from the newest anchor).
pub fn automate(spec: &TrustAnchorRotationSpec, rotation: &RotationRecord) -> Automate {
    if spec.automation.issuer_renewal != RenewalMode::Automatic {
        return Automate::Manual;
    }
    match rotation
        .issuer_renewal
        .as_ref()
        .filter(|r| r.rotation_id == rotation.id)
    {
        Some(r) => Automate::Triggered(r.triggered_at.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        None => Automate::Trigger,
    }
}

impl AwaitIssuer {
    /// Decides over the new anchor and the issuer chain the guard read.
    async fn execute(
        &self,
        ctx: &StepContext,
        expectation: Expectation,
        progress: &mut Progress,
        notices: &mut Vec<(&'static str, String)>,
    ) -> Result<Outcome, StepError> {
        let Expectation {
            to: new_root,
            issuer: chain,
            ..
        } = expectation;
        let Some(issuer) = chain.first() else {
            return Err(StepError::permanent(
                ErrorCategory::InvalidCertificate,
                "the identity issuer Secret holds no certificate",
            ));
        };
        progress.merge(Progress {
            active_issuer: Some(issuer.summary()),
            ..Default::default()
        });
        // Whether the issuer moved to the new anchor yet: everything below turns on it.
        let moved = issuer.is_signed_by(&new_root);
        // An issuer Linkerd cannot use: the control plane is not restarted onto it.
        if moved {
            if let Some(m) =
                super::validate::issuer_block(issuer, ctx.now, &ctx.spec.identity_issuer)
            {
                return Ok(Outcome::blocked(m));
            }
        }
        if !moved {
            if let Some(parked) = self.automation(ctx, issuer, progress, notices).await? {
                return Ok(again_after_retarget(
                    parked,
                    &ctx.rotation.superseded_anchors,
                ));
            }
        }
        let cp = &ctx.spec.control_plane;
        let mut identity = IdentityView {
            events: vec![],
            restarted_since_issuer: false,
            signing_with_issuer: false,
        };
        let mut pods = Vec::new();
        if moved {
            identity.events =
                read::identity_events(&ctx.client, &cp.namespace, &cp.identity_deployment).await?;
            if let Ok(d) = read::split_missing(
                read::deployment_since(
                    &ctx.client,
                    &cp.namespace,
                    &cp.identity_deployment,
                    loaded_at_start_since(issuer),
                )
                .await,
            )? {
                identity.restarted_since_issuer =
                    d.rollout_complete() && d.stale_pods.is_empty() && d.replicas > 0;
                pods = d.live_pods;
            }
        }
        let mut outcome =
            decide_issuer(issuer, &new_root, &identity, &ctx.spec.identity_issuer, cp);
        if outcome != Outcome::Done && moved && !pods.is_empty() {
            // Not proven by the start times or an Event: ask the identity pods' own proxies.
            identity.signing_with_issuer = probe::probe_pods(
                &ctx.client,
                pods,
                &ctx.probe_config(),
                {
                    let issuer = issuer.clone();
                    move |o| cert_state(&o, &issuer) == CertState::Active
                },
                |_, _| {},
            )
            .await
            .iter()
            .all(|(_, on_issuer)| *on_issuer);
            if identity.signing_with_issuer {
                outcome =
                    decide_issuer(issuer, &new_root, &identity, &ctx.spec.identity_issuer, cp);
            }
        }
        Ok(if moved {
            outcome
        } else {
            again_after_retarget(outcome, &ctx.rotation.superseded_anchors)
        })
    }
}

impl AwaitIssuer {
    /// The approval gate and the automatic re-issuance, while the issuer is not yet signed by
    /// the new anchor. `Some` is the outcome to return; `None` leaves it to the person
    /// (`issuerRenewal: Manual`, approved or not asked).
    async fn automation(
        &self,
        ctx: &StepContext,
        issuer: &Certificate,
        progress: &mut Progress,
        notices: &mut Vec<(&'static str, String)>,
    ) -> Result<Option<Outcome>, StepError> {
        match approval::check(
            ApprovalGate::IssuerRenewal,
            &ctx.spec,
            &ctx.rotation,
            &ctx.approval,
            ctx.now,
        ) {
            Gate::Open => {}
            Gate::Awaiting(message) => return Ok(Some(Outcome::blocked(message))),
            Gate::Approved(a) => {
                notices.push((approval::APPROVAL_CONSUMED, approval::consumed_note(&a)));
                progress.approvals.push(a);
            }
        }
        let r = &ctx.spec.identity_issuer;
        let what = format!("Certificate {}/{}", r.namespace, r.certificate);
        match automate(&ctx.spec, &ctx.rotation) {
            Automate::Manual => Ok(None),
            Automate::Triggered(at) => Ok(Some(Outcome::wait(
                format!(
                    "the operator triggered the re-issuance of the identity issuer ({what}) at {at}                      (spec.automation.issuerRenewal: Automatic); waiting for cert-manager to issue it                      under the new trust anchor (`kubectl -n {} describe certificate {}` shows why if it does not)",
                    r.namespace, r.certificate
                ),
                POLL,
            ))),
            Automate::Trigger => {
                // Outside the maintenance windows: parked, nothing re-issued.
                if let Some(m) = ctx.window.park() {
                    return Ok(Some(Outcome::blocked(m)));
                }
                let renewed = certmanager::renew(&ctx.client, &r.namespace, &r.certificate)
                    .await
                    .map_err(|e| e.into_step_error(&what))?;
                Ok(Some(match renewed {
                    certmanager::Renewed::Triggered => {
                        let note = format!(
                            "triggered the re-issuance of the identity issuer {what} under the new trust anchor                              (replacing issuer {}), as `cmctl renew` does: the trust bundle has propagated to                              every meshed pod (spec.automation.issuerRenewal: Automatic)",
                            short_fingerprint(issuer.fingerprint())
                        );
                        notices.push((ISSUER_RENEWAL_TRIGGERED, note));
                        progress.issuer_renewal = Some(IssuerRenewalRecord {
                            rotation_id: ctx.rotation.id.clone(),
                            triggered_at: Time(ctx.now),
                            replaced_issuer: Some(issuer.fingerprint().to_string()),
                        });
                        Outcome::wait(
                            format!(
                                "the operator triggered the re-issuance of the identity issuer ({what}); waiting                                  for cert-manager to issue it under the new trust anchor"
                            ),
                            POLL,
                        )
                    }
                    // cert-manager is re-issuing it already (a routine renewal, or a person's):
                    // nothing is triggered, the new issuer is awaited.
                    certmanager::Renewed::AlreadyIssuing => Outcome::wait(
                        format!(
                            "cert-manager is already re-issuing the identity issuer ({what}); waiting for it"
                        ),
                        POLL,
                    ),
                }))
            }
        }
    }
}

/// A rotation that moved on to a newer anchor mid-rotation (its `supersededAnchors`) needs
/// the issuer re-issued from the newest anchor, even if the person re-issued it before: the
/// wait says so.
pub fn again_after_retarget(outcome: Outcome, superseded: &[String]) -> Outcome {
    match outcome {
        Outcome::Wait {
            reason,
            retry_after,
            patience,
        } if !superseded.is_empty() => Outcome::Wait {
            reason: format!(
                "{reason} (again if you did before: the trust anchor was renewed mid-rotation and the rotation moved on from {}; an issuer signed by an earlier anchor does not count)",
                superseded
                    .iter()
                    .map(|f| short_fingerprint(f))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            retry_after,
            patience,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testing::{issued, root};
    use jiff::{Timestamp, ToSpan};

    fn ev(reason: &str, at: Timestamp) -> IdentityEvent {
        IdentityEvent {
            reason: reason.into(),
            message: "m".into(),
            at,
        }
    }

    #[test]
    fn after_a_retarget_the_wait_asks_for_the_issuer_again() {
        let wait = Outcome::wait("renew it", POLL);
        assert_eq!(again_after_retarget(wait.clone(), &[]), wait);
        let Outcome::Wait { reason, .. } =
            again_after_retarget(wait, &["bbbb00000000ffff".to_string()])
        else {
            panic!()
        };
        assert!(
            reason.starts_with("renew it (again") && reason.contains("bbbb00000000"),
            "{reason}"
        );
        assert_eq!(
            again_after_retarget(Outcome::Done, &["b".into()]),
            Outcome::Done
        );
    }

    #[test]
    fn an_identity_pod_started_in_the_issuers_second_may_hold_the_old_issuer() {
        let new = root("root");
        let issuer = issued("identity", &new, true).parsed();
        // The identity pod's proxy started at the issuer's notBefore, to the second.
        let started = |t: jiff::Timestamp| -> k8s_openapi::api::core::v1::Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "linkerd-identity-1", "namespace": "linkerd",
                             "labels": {"linkerd.io/control-plane-ns": "linkerd"}},
                "spec": {"containers": [{"name": "linkerd-proxy", "image": "proxy:1"}]},
                "status": {"containerStatuses": [{
                    "name": "linkerd-proxy", "ready": true, "restartCount": 0,
                    "image": "proxy:1", "imageID": "", "state": {"running": {"startedAt": t.to_string()}},
                }]},
            }))
            .expect("valid pod")
        };
        let since = loaded_at_start_since(&issuer);
        let same_second = [started(issuer.not_before())];
        assert_eq!(
            read::stale_pods(&same_second, "linkerd", since),
            ["linkerd/linkerd-identity-1"],
            "it may have read the Secret just before cert-manager wrote the new issuer"
        );
        let next_second = [started(issuer.not_before() + 1.second())];
        assert!(read::stale_pods(&next_second, "linkerd", since).is_empty());
    }

    #[test]
    fn identity_proxies_on_the_new_issuer_prove_identity_loaded_it() {
        let new = root("root");
        let issuer = issued("identity", &new, true).parsed();
        let (r, cp) = (
            CertificateRef::default_identity_issuer(),
            ControlPlaneRef::default(),
        );
        let t = issuer.not_before();
        // No Event, no restart after the issuer: waiting...
        let silent = IdentityView {
            events: vec![],
            restarted_since_issuer: false,
            signing_with_issuer: false,
        };
        assert!(matches!(
            decide_issuer(&issuer, &new.parsed(), &silent, &r, &cp),
            Outcome::Wait { .. }
        ));
        // ...until the identity pods' own proxies serve certificates from it, even after an
        // IssuerUpdateSkipped (identity was restarted onto it since).
        for events in [vec![], vec![ev(ISSUER_UPDATE_SKIPPED, t + 1.second())]] {
            let signing = IdentityView {
                events,
                restarted_since_issuer: false,
                signing_with_issuer: true,
            };
            assert_eq!(
                decide_issuer(&issuer, &new.parsed(), &signing, &r, &cp),
                Outcome::Done
            );
        }
    }

    #[test]
    fn waits_for_renewal_then_for_identity_to_load_it() {
        let old = root("root");
        let new = root("root");
        let old_issuer = issued("identity", &old, true).parsed();
        let new_issuer = issued("identity", &new, true).parsed();
        let r = CertificateRef::default_identity_issuer();
        let cp = ControlPlaneRef::default();
        let none = IdentityView {
            events: vec![],
            restarted_since_issuer: false,
            signing_with_issuer: false,
        };
        // Not renewed yet: the status names the manual step.
        let Outcome::Wait { reason, .. } =
            decide_issuer(&old_issuer, &new.parsed(), &none, &r, &cp)
        else {
            panic!()
        };
        assert!(
            reason.contains("cmctl renew -n linkerd linkerd-identity-issuer"),
            "{reason}"
        );
        assert!(reason.contains("linkerd trust renew issuer"), "{reason}");
        // Renewed; identity silent: wait for it.
        let Outcome::Wait { reason, .. } =
            decide_issuer(&new_issuer, &new.parsed(), &none, &r, &cp)
        else {
            panic!()
        };
        assert!(
            reason.contains("waiting for linkerd/linkerd-identity to load it"),
            "{reason}"
        );
        let t = new_issuer.not_before();
        // An IssuerUpdated from before this issuer does not count.
        let stale = IdentityView {
            events: vec![ev(ISSUER_UPDATED, t - 1.hour())],
            restarted_since_issuer: false,
            signing_with_issuer: false,
        };
        assert!(matches!(
            decide_issuer(&new_issuer, &new.parsed(), &stale, &r, &cp),
            Outcome::Wait { .. }
        ));
        let loaded = IdentityView {
            events: vec![ev(ISSUER_UPDATED, t + 1.second())],
            restarted_since_issuer: false,
            signing_with_issuer: false,
        };
        assert_eq!(
            decide_issuer(&new_issuer, &new.parsed(), &loaded, &r, &cp),
            Outcome::Done
        );
        // Skipped after the change: blocked with the recovery command...
        let skipped = IdentityView {
            events: vec![
                ev(ISSUER_UPDATED, t - 1.hour()),
                ev(ISSUER_UPDATE_SKIPPED, t + 1.second()),
            ],
            restarted_since_issuer: false,
            signing_with_issuer: false,
        };
        let Outcome::Blocked { message } =
            decide_issuer(&new_issuer, &new.parsed(), &skipped, &r, &cp)
        else {
            panic!()
        };
        assert!(message.contains("IssuerUpdateSkipped"), "{message}");
        assert!(
            message.contains("kubectl -n linkerd rollout restart deploy/linkerd-identity"),
            "{message}"
        );
        // ...and clears once identity restarted (loading the issuer at start) or updated later.
        let restarted = IdentityView {
            restarted_since_issuer: true,
            ..skipped.clone()
        };
        assert_eq!(
            decide_issuer(&new_issuer, &new.parsed(), &restarted, &r, &cp),
            Outcome::Done
        );
        let later = IdentityView {
            events: vec![
                ev(ISSUER_UPDATE_SKIPPED, t + 1.second()),
                ev(ISSUER_UPDATED, t + 5.second()),
            ],
            restarted_since_issuer: false,
            signing_with_issuer: false,
        };
        assert_eq!(
            decide_issuer(&new_issuer, &new.parsed(), &later, &r, &cp),
            Outcome::Done
        );
        // identity could not validate the new issuer: blocked with identity's own words.
        let failed = IdentityView {
            events: vec![IdentityEvent {
                message: "failed to verify issuer credentials".into(),
                ..ev(ISSUER_VALIDATION_FAILED, t + 1.second())
            }],
            restarted_since_issuer: false,
            signing_with_issuer: false,
        };
        let Outcome::Blocked { message } =
            decide_issuer(&new_issuer, &new.parsed(), &failed, &r, &cp)
        else {
            panic!("an IssuerValidationFailed Event blocks")
        };
        assert!(
            message.contains("IssuerValidationFailed")
                && message.contains("failed to verify issuer credentials"),
            "{message}"
        );
    }
}
